"""Serve an aiohttp application, or any protocol, on an asyncio server the App can close like the SMTP ones."""
from __future__ import annotations

import asyncio
from typing import Callable

from aiohttp import web

# room for a burst of new connections (aiohttp's default backlog is 128)
BACKLOG = 1024


async def start_runner(app: web.Application, shutdown_timeout: float = 5.0) -> web.AppRunner:
    # no access log: one log line per request would cost more than answering it
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    return runner


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
