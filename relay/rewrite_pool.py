"""Rewriting off the event loop: a worker process, so SMTP intake keeps a core to itself.

One call per message rewrites all its copies (one round trip, not one per recipient).
With processes = 0 it rewrites inline, on the loop.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Sequence

from relay.rewrite import RewritePlan, RewriteResult, rewrite_message

log = logging.getLogger(__name__)


def rewrite_all(raw: bytes, plans: Sequence[RewritePlan]) -> list[RewriteResult]:
    return [rewrite_message(raw, plan) for plan in plans]


class RewritePool:
    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    async def rewrite_all(self, raw: bytes, plans: Sequence[RewritePlan]) -> list[RewriteResult]:
        if not self.processes or not plans:
            return rewrite_all(raw, plans)
        if self._pool is None:
            # spawn, not fork: this process has threads (the store's writer) that fork would copy mid-step
            self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"))
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, rewrite_all, raw, list(plans))
        except BrokenProcessPool:
            log.error("rewrite worker died; starting a new one and rewriting this mail inline")
            self._pool = None
            return rewrite_all(raw, plans)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
