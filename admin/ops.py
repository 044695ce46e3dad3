"""Operational endpoints of the admin listener: /healthz and /metrics (Prometheus text)."""
from __future__ import annotations

from typing import Callable, Mapping

from aiohttp import web

from admin.keys import METRICS
from relay.metrics import Metrics, Samples
from relay.store import Store

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})


async def metrics(request: web.Request) -> web.Response:
    text = await request.app[METRICS].render()
    return web.Response(body=text.encode("utf-8"), headers={"Content-Type": PROMETHEUS_TYPE,
                                                            "Cache-Control": "no-store"})


def register_mail_metrics(metrics: Metrics, store: Store, *, accepted: Callable[[], int],
                          results: Callable[[], Mapping[str, int]]) -> None:
    """Mail counters of this process, plus the shared queue as the store sees it."""
    metrics.collector("trackrelay_mail_accepted_total", "Mail accepted over SMTP (250 after spooling)",
                      lambda: {(): accepted()}, kind="counter")
    names = {"sent": "delivered", "deferred": "deferred", "bounced": "bounced"}
    metrics.collector("trackrelay_deliveries_total", "Delivery results per recipient",
                      lambda: {(names[k],): results().get(k, 0) for k in names}, kind="counter",
                      labels=("result",))

    async def by_status() -> Samples:
        counts = await store.queue_counts()
        return {(s,): counts.get(s, 0) for s in ("queued", "deferred", "sent", "partial", "bounced")}

    metrics.collector("trackrelay_messages", "Messages in the store by status (queued + deferred = queue depth)",
                      by_status, labels=("status",))


def register_notify_metrics(metrics: Metrics, store: Store) -> None:
    """The webhook outbox as the store sees it (the attempts are counted by the notify role)."""
    async def by_status() -> Samples:
        counts = await store.delivery_counts()
        return {(s,): counts.get(s, 0) for s in ("queued", "sent", "failed")}

    metrics.collector("trackrelay_notification_deliveries",
                      "Webhook deliveries in the outbox by status (queued = waiting or being retried)",
                      by_status, labels=("status",))


def register_child_notify_metrics(metrics: Metrics, counts: Callable[[], Mapping[str, int]]) -> None:
    """The attempts of a notify role running in serve's child process, as it reports them
    (where notify runs in this process, the worker counts them itself)."""
    metrics.collector("trackrelay_notifications_total", "Webhook delivery attempts by result",
                      lambda: {(r,): counts().get(f"notify_{r}", 0) for r in ("sent", "retried", "failed")},
                      kind="counter", labels=("result",))
