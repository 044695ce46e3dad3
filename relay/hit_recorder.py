"""Write-behind recording of hits: a bounded in-memory queue drained in batches.

The pixel must never wait for the store (invariant 6), so handlers only append here.
One writer task takes up to ``batch_size`` events at a time and hands them to the store
in one call (one transaction). Urgent hits (those that may notify someone: a person's
first open of a copy, a person's click) go ahead of the rest without waiting for company,
so a flood of opens on one mail does not delay the notice of another, and they have a
bound of their own, so the flood does not crowd them out either. A failed write keeps its
batch and is retried with backoff; a full queue refuses the hit and counts it as dropped.
``close()`` drains everything still queued before the store is closed.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from relay.errors import StoreUnavailable
from relay.metrics import Metrics
from relay.records import NewEvent

log = logging.getLogger(__name__)


class HitSink(Protocol):
    async def record_hits(self, events: Sequence[NewEvent]) -> int: ...


@dataclass(frozen=True)
class RecorderSettings:
    max_queue: int = 100000
    batch_size: int = 500
    # how long a partial batch waits for company: fewer commits under steady load
    linger: float = 0.05
    retry_initial: float = 0.05
    retry_max: float = 2.0
    # a batch the store rejects (not an outage) is retried this often, then split
    max_rejections: int = 3


class HitRecorder:
    def __init__(self, store: HitSink, metrics: Metrics, settings: RecorderSettings = RecorderSettings(), *,
                 on_recorded: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.s = settings
        self._on_recorded = on_recorded  # a batch is committed (the notify role may have work)
        self._queue: deque[NewEvent] = deque()
        self._urgent: deque[NewEvent] = deque()
        self._arrived = asyncio.Event()
        self._full_batch = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False
        self._in_flight = 0
        self.dropped = metrics.counter("trackrelay_hits_dropped_total",
                                       "Hits not recorded (queue full, store rejected, lookup failed)",
                                       ("reason",))
        self.recorded = metrics.counter("trackrelay_hits_recorded_total", "Hit events written to the store")
        self.failures = metrics.counter("trackrelay_hit_store_failures_total",
                                        "Failed batch writes of hits (each is retried)")
        metrics.collector("trackrelay_hit_queue_depth", "Hits waiting to be written", lambda: {(): self.depth})

    @property
    def depth(self) -> int:
        return len(self._queue) + len(self._urgent) + self._in_flight

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hit-recorder")

    def submit(self, event: NewEvent, *, urgent: bool = False) -> bool:
        """Queue one hit; never blocks. False (and counted) when its queue is full. Urgent hits
        have a queue (and a bound) of their own: a flood never crowds out a notice."""
        queue = self._urgent if urgent else self._queue
        if len(queue) >= self.s.max_queue:
            self.dropped.inc("queue_full")
            return False
        queue.append(event)
        self._arrived.set()
        if urgent or len(self._queue) >= self.s.batch_size:
            self._full_batch.set()
        return True

    async def close(self, timeout: float = 30.0) -> None:
        """Write everything queued (retrying through a short outage), then stop."""
        self._closing = True
        self._arrived.set()
        self._full_batch.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except asyncio.TimeoutError:
            lost = self.depth  # counted before cancelling: the writer forgets its batch then
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            if lost:
                log.error("store unavailable at shutdown: %d hits not recorded", lost)
                self.dropped.inc("shutdown", n=lost)
            self._queue.clear()
            self._urgent.clear()
            self._in_flight = 0

    async def _run(self) -> None:
        while True:
            if not self._queue and not self._urgent:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            if (len(self._queue) < self.s.batch_size and not self._urgent and not self._closing
                    and self.s.linger > 0):
                self._full_batch.clear()
                try:
                    await asyncio.wait_for(self._full_batch.wait(), self.s.linger)
                except asyncio.TimeoutError:
                    pass
            batch = [self._urgent.popleft() for _ in range(min(len(self._urgent), self.s.batch_size))]
            batch += [self._queue.popleft() for _ in range(min(len(self._queue), self.s.batch_size - len(batch)))]
            n = len(batch)
            self._in_flight = n
            try:
                await self._write(batch)
            finally:
                self._in_flight = 0

    async def _write(self, batch: list[NewEvent]) -> None:
        delay = self.s.retry_initial
        rejections = 0
        while True:
            try:
                stored = await self.store.record_hits(batch)
                self.recorded.inc(n=stored)
                self._on_recorded()
                if stored < len(batch):  # their copies were erased meanwhile
                    self.dropped.inc("erased", n=len(batch) - stored)
                return
            except (StoreUnavailable, ConnectionError, OSError) as e:
                self.failures.inc()
                log.warning("hits not written yet (%d queued): %s; retrying in %.2fs", self.depth, e, delay)
            except Exception:
                # not an outage: a bug or a row the store refuses. Retry a little, then
                # isolate the bad rows so they cannot block every hit behind them.
                self.failures.inc()
                rejections += 1
                log.exception("store rejected a batch of %d hits", len(batch))
                if rejections >= self.s.max_rejections:
                    if len(batch) == 1:
                        log.error("hit dropped, the store refuses it: a %s of copy %d", batch[0].type, batch[0].copy_id)
                        self.dropped.inc("rejected")
                    else:
                        for event in batch:
                            await self._write([event])
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.s.retry_max)
