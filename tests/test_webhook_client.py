"""Webhook POSTs against a real aiohttp receiver on loopback (allow_private=True), and refusals."""
from __future__ import annotations

import asyncio
import gzip
import ipaddress
import ssl
import time
from dataclasses import dataclass, field
from typing import AsyncIterator

import pytest
import trustme
from aiohttp import web

from relay.notify_payloads import NoticeEvent, render, verify
from relay.webhook_client import MAX_RESPONSE_BYTES, post, send_pinned

EVENT = NoticeEvent(id="ev-9", type="message.opened", occurred_at="2026-12-04T11:05:09Z", message_id="7",
                    message_header_id="<m@example.com>", subject="Hello", recipient="bob@example.com",
                    hit_class="human", panel_url="https://panel.example/messages/7")


GZIP_BOMB = gzip.compress(b"\0" * (50 * 1024 * 1024))  # about 50 KB that inflates to 50 MB


@dataclass
class Arrived:
    path: str
    host: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    port: int
    requests: list[Arrived] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)  # lets a slow handler finish


def receiver_app(receiver_ref: list[Receiver]) -> web.Application:
    async def record(request: web.Request) -> None:
        receiver_ref[0].requests.append(Arrived(request.path, request.host, dict(request.headers),
                                                await request.read()))

    async def ok(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="ok")

    async def moved(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=302, headers={"Location": "/elsewhere"})

    async def endless(request: web.Request) -> web.StreamResponse:
        await record(request)
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b"x" * 65536
        try:
            while True:  # a client that reads it all never returns
                await response.write(chunk)
        except (ConnectionError, RuntimeError):
            return response

    async def slow(request: web.Request) -> web.Response:
        await record(request)
        await receiver_ref[0].release.wait()
        return web.Response(text="late")

    async def bomb(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(body=GZIP_BOMB, headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_post("/hook", ok)
    app.router.add_post("/moved", moved)
    app.router.add_post("/elsewhere", ok)
    app.router.add_post("/huge", endless)
    app.router.add_post("/slow", slow)
    app.router.add_post("/bomb", bomb)
    return app


async def start(ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, Receiver]:
    ref: list[Receiver] = []
    runner = web.AppRunner(receiver_app(ref), shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    ref.append(Receiver(url=f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}", port=port))
    return runner, ref[0]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    runner, rec = await start()
    yield rec
    rec.release.set()
    await runner.cleanup()


async def test_a_json_webhook_arrives_signed(receiver: Receiver) -> None:
    body, headers = render("json", EVENT, secret="s3cret", t=int(time.time()))
    result = await post(receiver.url + "/hook", body, headers, allow_private=True, timeout=5)
    assert result.delivered and result.status == 200 and result.error == "" and result.body == b"ok"
    [arrived] = receiver.requests
    assert arrived.body == body and arrived.headers["X-Trackrelay-Event-Id"] == "ev-9"
    assert verify("s3cret", arrived.headers["X-Trackrelay-Signature"], arrived.body, now=int(time.time()))


async def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    result = await post(receiver.url + "/moved", b"{}", {}, allow_private=True, timeout=5)
    assert result.status == 302 and not result.delivered and "not followed" in result.error
    assert [r.path for r in receiver.requests] == ["/moved"]


async def test_a_huge_answer_is_read_only_to_64_kb(receiver: Receiver) -> None:
    result = await post(receiver.url + "/huge", b"{}", {}, allow_private=True, timeout=10)
    assert result.status == 200 and len(result.body) == MAX_RESPONSE_BYTES == 64 * 1024
    assert "rest not read" in result.error


async def test_a_compressed_answer_is_kept_as_sent_never_inflated(receiver: Receiver) -> None:
    result = await post(receiver.url + "/bomb", b"{}", {}, allow_private=True, timeout=10)
    assert result.status == 200 and result.body == GZIP_BOMB[:MAX_RESPONSE_BYTES]


async def test_a_slow_receiver_hits_the_timeout(receiver: Receiver) -> None:
    result = await post(receiver.url + "/slow", b"{}", {}, allow_private=True, timeout=0.5)
    assert result.status is None and "timed out" in result.error and not result.delivered
    assert [r.path for r in receiver.requests] == ["/slow"]  # it did get there, and was given up on


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "localhost"])
async def test_loopback_is_refused_before_any_connection(receiver: Receiver, host: str) -> None:
    result = await post(f"http://{host}:{receiver.port}/hook", b"{}", {}, allow_private=False, timeout=5)
    assert result.status is None and result.error.startswith("refused:") and "loopback" in result.error
    allowed = await post(f"http://127.0.0.1:{receiver.port}/hook", b"{}", {}, allow_private=True, timeout=5)
    assert allowed.delivered and len(receiver.requests) == 1  # only the allowed one ever arrived


async def test_a_bad_url_is_refused_not_raised() -> None:
    result = await post("ftp://example.com/x", b"{}", {}, allow_private=False, timeout=5)
    assert result.status is None and result.error.startswith("refused:")


async def test_an_unreachable_target_is_a_result() -> None:
    # a port that was just free: nothing listens there once the server is closed
    server = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    result = await post(f"http://127.0.0.1:{port}/hook", b"{}", {}, allow_private=True, timeout=5)
    assert result.status is None and "Connect" in result.error and not result.delivered


async def test_the_checked_address_is_used_with_the_names_host_header(receiver: Receiver) -> None:
    # a .invalid name never resolves: arriving at all proves there was no second lookup
    url = f"http://hooks.invalid:{receiver.port}/hook"
    status, answer, error = await send_pinned(url, b"{}", {}, [ipaddress.ip_address("127.0.0.1")])
    assert (status, answer, error) == (200, b"ok", "")
    assert receiver.requests[0].host == f"hooks.invalid:{receiver.port}"


async def test_tls_to_the_checked_address_verifies_the_names_certificate() -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.invalid").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    runner, rec = await start(server_tls)
    try:
        pinned = [ipaddress.ip_address("127.0.0.1")]
        status, _, _ = await send_pinned(f"https://hooks.invalid:{rec.port}/hook", b"{}", {}, pinned, client_tls)
        assert status == 200 and rec.requests[0].host == f"hooks.invalid:{rec.port}"
        with pytest.raises(ssl.SSLCertVerificationError):  # another name: the certificate does not match
            await send_pinned(f"https://other.invalid:{rec.port}/hook", b"{}", {}, pinned, client_tls)
    finally:
        await runner.cleanup()
