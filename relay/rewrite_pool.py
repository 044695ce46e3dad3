"""Rewriting off the event loop: a worker process, so SMTP intake keeps a core to itself.

One call per message rewrites all its copies: one round trip, and one rewrite whose
result is stamped with each copy's token (rewrite.rewrite_copies).
With processes = 0 it rewrites inline, on the loop.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Sequence

from relay.rewrite import RewritePlan, RewriteResult, rewrite_copies

log = logging.getLogger(__name__)


class RewritePool:
    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    async def rewrite_all(self, raw: bytes, plans: Sequence[RewritePlan]) -> list[RewriteResult]:
        if not self.processes or not plans:
            return rewrite_copies(raw, plans)
        if self._pool is None:
            # spawn, not fork: this process has threads (the store's writer) that fork would copy mid-step
            self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"))
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, rewrite_copies, raw, list(plans))
        except BrokenProcessPool:
            log.error("rewrite worker died; starting a new one and rewriting this mail inline")
            self._pool = None
            return rewrite_copies(raw, plans)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
