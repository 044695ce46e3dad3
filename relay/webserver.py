"""Serve an aiohttp application (or low-level server) on an asyncio server the App can close like the SMTP ones."""
from __future__ import annotations

import asyncio

from aiohttp import web

# room for a burst of new connections (aiohttp's default backlog is 128)
BACKLOG = 1024


async def start_runner(handler: web.Application | web.Server, shutdown_timeout: float = 5.0) -> web.BaseRunner:
    """A runner for an Application or for a low-level Server (which sets its own access log)."""
    runner: web.BaseRunner
    if isinstance(handler, web.Server):
        runner = web.ServerRunner(handler, shutdown_timeout=shutdown_timeout)
    else:
        runner = web.AppRunner(handler, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    return runner


async def listen(runner: web.BaseRunner, host: str, port: int, *, reuse_port: bool = False) -> asyncio.base_events.Server:
    """A listening socket for runner; closing it stops new connections, runner.cleanup() ends the rest.

    reuse_port: several processes may listen on the same port (SO_REUSEPORT); the kernel
    spreads connections over them.
    """
    assert runner.server is not None, "start_runner() first"
    loop = asyncio.get_running_loop()
    return await loop.create_server(runner.server, host, port, backlog=BACKLOG, reuse_address=True,
                                    reuse_port=reuse_port)
