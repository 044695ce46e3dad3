"""Serve an aiohttp application, or any protocol, on an asyncio server the App can close like the SMTP ones."""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from aiohttp import web
from aiohttp.http import StreamWriter
from multidict import CIMultiDict

# room for a burst of new connections (aiohttp's default backlog is 128)
BACKLOG = 1024


async def start_runner(app: web.Application, shutdown_timeout: float = 5.0) -> web.AppRunner:
    # no access log: one log line per request would cost more than answering it
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    runner.server.request_factory = _without_server_header(runner.server.request_factory)
    return runner


def _without_server_header(make_request: Callable[..., web.BaseRequest]) -> Callable[..., web.BaseRequest]:
    """aiohttp names itself and its version in a Server header on every answer, and there is
    no setting for it; the hook of a writer of our own drops it as the headers go out. Made
    here, per request, it also covers the answers to requests the parser refused, which
    reach no route, middleware or signal."""

    def make(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
        writer = StreamWriter(protocol, asyncio.get_running_loop(), on_headers_sent=_drop_server)
        return make_request(message, payload, protocol, writer, task)

    return make


async def _drop_server(headers: CIMultiDict[str]) -> None:
    headers.popall("Server", None)


async def listen(protocol: Callable[[], asyncio.BaseProtocol], host: str, port: int, *,
                 reuse_port: bool = False) -> asyncio.base_events.Server:
    """A listening socket for protocol (an AppRunner's server, say); closing it stops new
    connections, the owner's own cleanup ends the rest.

    reuse_port: several processes may listen on the same port (SO_REUSEPORT); the kernel
    spreads connections over them.
    """
    loop = asyncio.get_running_loop()
    return await loop.create_server(protocol, host, port, backlog=BACKLOG, reuse_address=True,
                                    reuse_port=reuse_port)
