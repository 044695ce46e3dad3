"""One webhook POST: checked target, pinned addresses, no redirects, capped body, a result value.

The host is resolved and checked once (relay/webhook_target.py); aiohttp then connects through a
resolver that knows only those addresses, while the URL keeps its name for the Host header and TLS
SNI and certificate checks. Nothing here raises for a refused, failed or slow webhook.
"""
from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from relay.webhook_target import Address, Refused, check_url, resolve_and_check

MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = "trackrelay-webhook"


@dataclass(frozen=True)
class PostResult:
    status: int | None   # None: no HTTP answer (refused, unreachable, timed out)
    latency: float       # seconds, from the start of the check to the end of the read
    error: str           # what went wrong, for the deliveries log; "" for a plain 2xx answer
    body: bytes = b""    # the answer's first MAX_RESPONSE_BYTES at most

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class PinnedResolver(AbstractResolver):
    """Answers every lookup with the addresses that were checked: no second DNS query."""

    def __init__(self, addresses: Sequence[Address]) -> None:
        self._addresses = list(addresses)

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host=str(addr), port=port,
                              family=socket.AF_INET6 if addr.version == 6 else socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST) for addr in self._addresses]

    async def close(self) -> None:
        return None


async def post(url: str, body: bytes, headers: Mapping[str, str], *, allow_private: bool,
               timeout: float) -> PostResult:
    """POST `body` to a webhook within `timeout` seconds (the lookup included)."""
    started = time.monotonic()

    def result(status: int | None, error: str, answer: bytes = b"") -> PostResult:
        return PostResult(status, time.monotonic() - started, error, answer)

    target = check_url(url)
    if isinstance(target, Refused):
        return result(None, f"refused: {target.reason}")
    try:
        async with asyncio.timeout(timeout):
            addresses = await resolve_and_check(target.host, target.port, allow_private)
            if isinstance(addresses, Refused):
                return result(None, f"refused: {addresses.reason}")
            status, answer, error = await send_pinned(url, body, headers, addresses)
            return result(status, error, answer)
    except TimeoutError:
        return result(None, f"timed out after {timeout:g}s")
    except (aiohttp.ClientError, OSError) as exc:
        return result(None, f"{type(exc).__name__}: {exc}")


async def send_pinned(url: str, body: bytes, headers: Mapping[str, str], addresses: Sequence[Address],
                      tls: ssl.SSLContext | None = None) -> tuple[int, bytes, str]:
    """POST to `url` connecting only to `addresses` (already checked): (status, capped body, error).

    `tls` replaces the system's trust store (tests bring their own CA)."""
    connector = aiohttp.TCPConnector(resolver=PinnedResolver(addresses), use_dns_cache=False, force_close=True,
                                     ssl=tls if tls is not None else True)
    # no proxies from the environment; no inflating a gzip answer (a small bomb is a huge body)
    async with aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=False) as session:
        async with session.post(url, data=body, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers},
                                allow_redirects=False) as response:
            answer, cut = await read_capped(response.content, MAX_RESPONSE_BYTES)
            if cut:
                response.close()  # drop the connection rather than read the rest
            return response.status, answer, _error(response, cut)


async def read_capped(stream: aiohttp.StreamReader, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes, and whether more were left unread."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await stream.read(limit - size)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), not stream.at_eof()


def _error(response: aiohttp.ClientResponse, cut: bool) -> str:
    if 300 <= response.status < 400:
        return f"HTTP {response.status}: redirect to {response.headers.get('Location', '?')[:200]!r} not followed"
    if not 200 <= response.status < 300:
        return f"HTTP {response.status}"
    return f"answer longer than {MAX_RESPONSE_BYTES} bytes, rest not read" if cut else ""
