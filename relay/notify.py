"""The notify role: sends the webhook outbox. Claims due deliveries with a lease, renders them
(relay/notify_payloads.py), POSTs them to checked addresses only (relay/webhook_client.py, the
target checked again at every attempt), and records each attempt with what it changed
(relay/notify_rules.py decides: sent, retry later, given up, webhook disabled).

At least once: a delivery is marked sent only after its receiver's 2xx; a process that dies in
between sends it again (same event id) once its lease has run out.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Mapping, Protocol, Sequence

from relay import webhook_client
from relay.metrics import Metrics
from relay.notify_payloads import Payload, render, render_digest
from relay.notify_rules import attempt_result, notice_event
from relay.records import ClaimedDelivery, DeliveryResult
from relay.webhook_client import PostResult

log = logging.getLogger(__name__)


class OutboxStore(Protocol):
    """What the notify role needs of the store: the webhook outbox."""

    async def claim_deliveries(self, worker: str, now: float, limit: int, lease: float) -> list[ClaimedDelivery]: ...
    async def finish_delivery(self, result: DeliveryResult) -> None: ...
    async def release_deliveries(self, worker: str) -> None: ...
    async def record_unopened(self, now: float, limit: int) -> int: ...
Post = Callable[..., Awaitable[PostResult]]
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_RESULTS: Mapping[str, str] = {"sent": "sent", "failed": "failed", "queued": "retried"}  # status -> metric label


@dataclass(frozen=True)
class NotifySettings:
    retry_intervals: Sequence[float]
    max_age: float
    timeout: float
    allow_private: bool
    panel_url: str  # admin.public_url: each event links to its message there
    poll: float = 0.5  # seconds between looks at the outbox when nothing wakes the worker
    batch: int = 20  # deliveries claimed (and sent concurrently) at once
    lease: float = 120.0  # a claim's lease; longer than any attempt (timeout) by far
    unopened_every: float = 60.0  # seconds (by the worker's clock) between looks for unopened mail
    unopened_batch: int = 100  # follow-ups made per look, so one look stays short


class NotifyWorker:
    def __init__(self, store: OutboxStore, settings: NotifySettings, metrics: Metrics, *,
                 clock: Callable[[], float] = time.time, post: Post = webhook_client.post) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self._post = post
        self._wake = asyncio.Event()
        self._stopping = False
        self._next_unopened = 0.0
        self.name = f"notify-{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self._results = metrics.counter("trackrelay_notifications_total",
                                        "Webhook delivery attempts by result", ("result",))
        self._latency = metrics.histogram("trackrelay_notification_latency_seconds",
                                          "Webhook request time", LATENCY_BUCKETS)

    @property
    def counts(self) -> dict[str, int]:
        """Attempts by result, keyed "notify_<result>" (serve's child reports them to its parent)."""
        return {f"notify_{result}": int(self._results.get(result)) for result in _RESULTS.values()}

    def wake(self) -> None:
        """A hit batch was recorded in this process: look at the outbox now."""
        self._wake.set()

    async def run(self) -> None:
        try:
            while not self._stopping:
                try:
                    busy = await self.run_once()
                except Exception:  # a store outage: try again after the poll
                    log.exception("notify: outbox round failed")
                    busy = 0
                if not busy:
                    try:
                        await asyncio.wait_for(self._wake.wait(), self.settings.poll)
                    except asyncio.TimeoutError:
                        pass
                    self._wake.clear()
        finally:  # what this worker claimed but did not finish is due again at once, for anyone
            await self.store.release_deliveries(self.name)

    async def run_once(self) -> int:
        """Send the due deliveries once; returns how many were claimed."""
        s = self.settings
        now = self.clock()
        if now >= self._next_unopened:
            self._next_unopened = now + s.unopened_every
            if await self.store.record_unopened(now, s.unopened_batch) == s.unopened_batch:
                self._next_unopened = now  # more are due: look again next round
        claimed = await self.store.claim_deliveries(self.name, now, s.batch, s.lease)
        groups = _groups(claimed)
        await asyncio.gather(*(self._send(group) for group in groups))
        return len(claimed)

    def stop(self) -> None:
        """run() ends after this round (or when its task is cancelled) and releases its claims."""
        self._stopping = True
        self._wake.set()

    async def _send(self, group: Sequence[ClaimedDelivery]) -> None:
        """One POST: a single event, or a digest of one webhook's due events."""
        hook = group[0].webhook
        payload = self._render(group)
        result = await self._post(hook.spec.url, payload[0], payload[1], allow_private=self.settings.allow_private,
                                  timeout=self.settings.timeout)
        self._latency.observe(result.latency)
        now = self.clock()
        for d in group:
            outcome = attempt_result(d, result, now, self.settings.retry_intervals, self.settings.max_age)
            await self.store.finish_delivery(outcome)
            self._results.inc(_RESULTS[outcome.status])
        if not result.delivered:
            log.info("webhook %d: %s", hook.id, result.error)

    def _render(self, group: Sequence[ClaimedDelivery]) -> Payload:
        hook = group[0].webhook
        events = [notice_event(d.id, d.payload, self.settings.panel_url) for d in group]
        t = int(self.clock())
        if hook.spec.digest > 0:
            return render_digest(hook.spec.kind, "dig_" + group[0].id, events, secret=hook.secret, t=t)
        return render(hook.spec.kind, events[0], secret=hook.secret, t=t)


def _groups(claimed: Sequence[ClaimedDelivery]) -> list[list[ClaimedDelivery]]:
    """Digest webhooks get one POST for all their due events; the others one per event."""
    digests: dict[int, list[ClaimedDelivery]] = {}
    singles: list[list[ClaimedDelivery]] = []
    for d in claimed:
        if d.webhook.spec.digest > 0:
            digests.setdefault(d.webhook.id, []).append(d)
        else:
            singles.append([d])
    return singles + list(digests.values())
