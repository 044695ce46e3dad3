"""The retention purge of a running server: daily at privacy.purge_time, in batches.

Each batch is one short transaction of at most PURGE_BATCH rows of each kind, with a pause
between batches, so intake and hits (which share the store's writer) never wait long.
Several delivery nodes may purge at once: deleting what another node deleted is a no-op.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Protocol

from relay.privacy import PURGE_BATCH, counts_text, next_purge_at, retention_cutoff
from relay.records import PurgeCounts

log = logging.getLogger(__name__)
PAUSE = 0.05  # between batches: the writer's queue drains meanwhile
LOOK_EVERY = 60.0  # the clock is looked at this often: a suspended machine wakes up to a purge due


class PurgeStore(Protocol):
    async def purge(self, cutoff: float, limit: int) -> PurgeCounts: ...


async def purge_all(store: PurgeStore, cutoff: float, *, batch: int = PURGE_BATCH,
                    progress: Callable[[PurgeCounts], None] | None = None, pause: float = PAUSE) -> PurgeCounts:
    """Batches until nothing older than cutoff is left; the rows removed."""
    total = PurgeCounts()
    while (done := await store.purge(cutoff, batch)).total:
        total += done
        if progress:
            progress(total)
        await asyncio.sleep(pause)
    return total


class Purger:
    def __init__(self, store: PurgeStore, retention_days: int, at: tuple[int, int], *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.retention_days = retention_days
        self.at = at
        self.clock = clock

    async def run(self) -> None:
        due = next_purge_at(self.clock(), *self.at)
        while True:
            wait = due - self.clock()
            if wait > 0:
                await asyncio.sleep(min(wait, LOOK_EVERY))
                continue
            now = self.clock()
            cutoff = retention_cutoff(now, self.retention_days)
            if cutoff is not None:
                try:
                    removed = await purge_all(self.store, cutoff)
                    log.info("retention purge (%d days): removed %s", self.retention_days, counts_text(removed))
                except Exception:  # a store outage: the next day's purge takes what is left
                    log.exception("retention purge failed")
            due = next_purge_at(now, *self.at)
