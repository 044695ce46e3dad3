"""PostgreSQL queries behind webhooks and their outbox: the twin of sqlite_webhooks.py.
Notify workers on any host claim due deliveries with FOR UPDATE SKIP LOCKED and a lease."""
from __future__ import annotations

from typing import Any, Sequence

import asyncpg

from relay.records import (
    Attempt, ClaimedDelivery, DeliveryReport, DeliveryResult, NewDelivery, Webhook, WebhookSpec,
)
from relay.notify_rules import plan_unopened
from relay.policy import privacy_lookups
from relay.store.sqlite_webhooks import UNOPENED_SQL, unopened_copy, webhook_from_row

_SPEC_COLUMNS = "url, kind, events, humans_only, first_only, unopened_after, digest, enabled"


class PgWebhooksMixin:
    """Mixed into PostgresStore; uses its self._conn."""

    async def add_webhook(self, user_id: int, spec: WebhookSpec, secret: str, now: float) -> Webhook:
        async with self._conn() as c:  # type: ignore[attr-defined]
            webhook_id = await c.fetchval(
                f"INSERT INTO webhooks (user_id, {_SPEC_COLUMNS}, secret, created_at)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) RETURNING id",
                user_id, *_spec_values(spec), secret, now)
        return Webhook(webhook_id, user_id, spec, now, None, secret)

    async def webhooks(self, user_id: int | None) -> list[Webhook]:
        async with self._conn() as c:  # type: ignore[attr-defined]
            rows = await c.fetch("SELECT * FROM webhooks WHERE ($1::bigint IS NULL OR user_id = $1) ORDER BY id",
                                 user_id)
        return [webhook_from_row(r) for r in rows]

    async def webhook(self, webhook_id: int, user_id: int | None) -> Webhook | None:
        async with self._conn() as c:  # type: ignore[attr-defined]
            row = await c.fetchrow("SELECT * FROM webhooks WHERE id = $1 AND ($2::bigint IS NULL OR user_id = $2)",
                                   webhook_id, user_id)
        return webhook_from_row(row) if row else None

    async def update_webhook(self, webhook_id: int, user_id: int, spec: WebhookSpec) -> bool:
        async with self._conn() as c:  # type: ignore[attr-defined]
            status = await c.execute(
                "UPDATE webhooks SET url = $1, kind = $2, events = $3, humans_only = $4, first_only = $5,"
                " unopened_after = $6, digest = $7, enabled = $8,"
                " failing_since = CASE WHEN $8 THEN NULL ELSE failing_since END WHERE id = $9 AND user_id = $10",
                *_spec_values(spec), webhook_id, user_id)
        return status.endswith(" 1")

    async def delete_webhook(self, webhook_id: int, user_id: int | None) -> bool:
        async with self._conn() as c:  # type: ignore[attr-defined]
            status = await c.execute("DELETE FROM webhooks WHERE id = $1 AND ($2::bigint IS NULL OR user_id = $2)",
                                     webhook_id, user_id)
        return status.endswith(" 1")

    async def add_deliveries(self, deliveries: Sequence[NewDelivery]) -> None:
        async with self._conn(transaction=True) as c:  # type: ignore[attr-defined]
            await insert_deliveries(c, deliveries)

    async def claim_deliveries(self, worker: str, now: float, limit: int, lease: float) -> list[ClaimedDelivery]:
        async with self._conn() as c:  # type: ignore[attr-defined]
            # one statement, no transaction around it: the worker looks several times a second
            rows = await c.fetch(
                "WITH due AS (SELECT d.id FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id"
                " WHERE d.status = 'queued' AND d.due_at <= $1 AND w.enabled"
                " AND (d.locked_until IS NULL OR d.locked_until < $1) ORDER BY d.due_at LIMIT $2"
                " FOR UPDATE OF d SKIP LOCKED),"
                " d AS (UPDATE webhook_deliveries d SET locked_by = $3, locked_until = $4 FROM due"
                " WHERE d.id = due.id RETURNING d.*)"
                " SELECT d.id AS d_id, d.payload, d.attempts, d.created_at AS d_created_at, w.*"
                " FROM d JOIN webhooks w ON w.id = d.webhook_id ORDER BY d.due_at", now, limit, worker, now + lease)
        return [ClaimedDelivery(r["d_id"], webhook_from_row(r), r["payload"], r["attempts"], r["d_created_at"])
                for r in rows]

    async def finish_delivery(self, result: DeliveryResult) -> None:
        async with self._conn(transaction=True) as c:  # type: ignore[attr-defined]
            await _finish(c, result)

    async def release_deliveries(self, worker: str) -> None:
        async with self._conn() as c:  # type: ignore[attr-defined]
            await c.execute("UPDATE webhook_deliveries SET locked_by = NULL, locked_until = NULL WHERE locked_by = $1",
                            worker)

    async def record_unopened(self, now: float, limit: int) -> int:
        """Make the due unopened follow-ups (at most `limit`), with their in-app notifications."""
        async with self._conn(transaction=True) as c:  # type: ignore[attr-defined]
            found = [unopened_copy(r) for r in await c.fetch(
                UNOPENED_SQL.format(now="$1::double precision", limit="$2"), now, limit)]
            keys, _ = privacy_lookups([f.recipient for f in found if f.recipient])
            dnt = frozenset(r[0] for r in await c.fetch("SELECT entry FROM do_not_track WHERE entry = ANY($1::text[])",
                                                        keys))
            made = 0
            for delivery, notice in plan_unopened(found, dnt, now):
                # another notify node may have made it meanwhile: the row's id says so
                if await c.fetchval(
                        "INSERT INTO webhook_deliveries (id, webhook_id, payload, due_at, created_at)"
                        " VALUES ($1,$2,$3,$4,$5) ON CONFLICT (id) DO NOTHING RETURNING id", delivery.id,
                        delivery.webhook_id, delivery.payload, delivery.due_at, delivery.created_at):
                    await c.execute("INSERT INTO notifications (user_id, message_id, type, recipient, url, text, at)"
                                    " VALUES ($1,$2,$3,$4,$5,$6,$7)", notice.user_id, notice.message_id, notice.type,
                                    notice.recipient, notice.url, notice.text, notice.at)
                    made += 1
        return made

    async def deliveries(self, webhook_id: int, limit: int = 100) -> list[DeliveryReport]:
        async with self._conn() as c:  # type: ignore[attr-defined]
            rows = await c.fetch("SELECT * FROM webhook_deliveries WHERE webhook_id = $1"
                                 " ORDER BY created_at DESC, id LIMIT $2", webhook_id, limit)
            attempts = await c.fetch("SELECT * FROM webhook_attempts WHERE delivery_id = ANY($1::text[]) ORDER BY id",
                                     [r["id"] for r in rows])
        tries: dict[str, list[Attempt]] = {r["id"]: [] for r in rows}
        for a in attempts:
            tries[a["delivery_id"]].append(Attempt(a["delivery_id"], a["at"], a["status_code"], a["latency"], a["error"]))
        return [DeliveryReport(r["id"], r["status"], r["attempts"], r["last_error"], r["created_at"], r["due_at"],
                               r["payload"], tuple(tries[r["id"]])) for r in rows]

    async def delivery_counts(self) -> dict[str, int]:
        async with self._conn() as c:  # type: ignore[attr-defined]
            rows = await c.fetch("SELECT status, COUNT(*) FROM webhook_deliveries GROUP BY status")
        return {r[0]: r[1] for r in rows}


def _spec_values(s: WebhookSpec) -> tuple[Any, ...]:
    return (s.url, s.kind, ",".join(s.events), s.humans_only, s.first_only, s.unopened_after, s.digest, s.enabled)


async def enabled_webhooks(c: asyncpg.Connection, user_ids: Sequence[int]) -> dict[int, list[Webhook]]:
    found: dict[int, list[Webhook]] = {}
    if not user_ids:
        return found
    for r in await c.fetch("SELECT * FROM webhooks WHERE enabled AND user_id = ANY($1::bigint[]) ORDER BY id",
                           list(user_ids)):
        found.setdefault(r["user_id"], []).append(webhook_from_row(r))
    return found


async def insert_deliveries(c: asyncpg.Connection, deliveries: Sequence[NewDelivery]) -> None:
    await c.executemany(
        "INSERT INTO webhook_deliveries (id, webhook_id, payload, due_at, created_at) VALUES ($1,$2,$3,$4,$5)",
        [(d.id, d.webhook_id, d.payload, d.due_at, d.created_at) for d in deliveries])


async def _finish(c: asyncpg.Connection, r: DeliveryResult) -> None:
    a = r.attempt
    await c.execute("INSERT INTO webhook_attempts (delivery_id, at, status_code, latency, error) VALUES ($1,$2,$3,$4,$5)",
                    a.delivery_id, a.at, a.status_code, a.latency, a.error)
    await c.execute("UPDATE webhook_deliveries SET status = $1, due_at = $2, attempts = attempts + 1, last_error = $3,"
                    " locked_by = NULL, locked_until = NULL WHERE id = $4", r.status, r.due_at, a.error, a.delivery_id)
    await c.execute("UPDATE webhooks SET failing_since = $1, enabled = enabled AND NOT $2 WHERE id = $3",
                    r.failing_since, r.disable, r.webhook_id)
    if r.disable:
        await c.execute("UPDATE webhook_deliveries SET status = 'failed', last_error = 'webhook disabled'"
                        " WHERE webhook_id = $1 AND status = 'queued'", r.webhook_id)
    if r.notice is not None:
        n = r.notice
        await c.execute("INSERT INTO notifications (user_id, message_id, type, recipient, url, text, at)"
                        " VALUES ($1,$2,$3,$4,$5,$6,$7)", n.user_id, n.message_id, n.type, n.recipient, n.url,
                        n.text, n.at)
