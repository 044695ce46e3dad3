"""SQLite queries behind webhooks and their outbox (relay/notify.py is the worker;
relay/notify_rules.py decides what an attempt means)."""
from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any, Sequence

from relay.notify_rules import UnopenedCopy, plan_unopened
from relay.policy import privacy_lookups
from relay.records import (
    Attempt, ClaimedDelivery, DeliveryReport, DeliveryResult, NewDelivery, Webhook, WebhookSpec,
)

if TYPE_CHECKING:
    from relay.store.sqlite_runner import SqliteRunner

_SPEC_COLUMNS = "url, kind, events, humans_only, first_only, unopened_after, digest, enabled"


class WebhooksMixin:
    """Mixed into SqliteStore; uses its self._runner."""

    _runner: SqliteRunner

    async def add_webhook(self, user_id: int, spec: WebhookSpec, secret: str, now: float) -> Webhook:
        def job(c: sqlite3.Connection) -> Webhook:
            cur = c.execute(f"INSERT INTO webhooks (user_id, {_SPEC_COLUMNS}, secret, created_at)"
                            " VALUES (?,?,?,?,?,?,?,?,?,?,?)", (user_id, *_spec_values(spec), secret, now))
            return Webhook(cur.lastrowid, user_id, spec, now, None, secret)

        return await self._runner.write(job)

    async def webhooks(self, user_id: int | None) -> list[Webhook]:
        sql, args = "SELECT * FROM webhooks", ()
        if user_id is not None:
            sql, args = sql + " WHERE user_id = ?", (user_id,)
        return await self._runner.read(lambda c: [webhook_from_row(r) for r in c.execute(sql + " ORDER BY id", args)])

    async def webhook(self, webhook_id: int, user_id: int | None) -> Webhook | None:
        def job(c: sqlite3.Connection) -> Webhook | None:
            row = c.execute("SELECT * FROM webhooks WHERE id = ? AND (? IS NULL OR user_id = ?)",
                            (webhook_id, user_id, user_id)).fetchone()
            return webhook_from_row(row) if row else None

        return await self._runner.read(job)

    async def update_webhook(self, webhook_id: int, user_id: int, spec: WebhookSpec) -> bool:
        """An update that leaves the webhook enabled (re-enabling it, say) forgets when it started failing."""
        return await self._runner.write(lambda c: c.execute(
            "UPDATE webhooks SET url = ?, kind = ?, events = ?, humans_only = ?, first_only = ?,"
            " unopened_after = ?, digest = ?, enabled = ?,"
            " failing_since = CASE WHEN ? THEN NULL ELSE failing_since END WHERE id = ? AND user_id = ?",
            (*_spec_values(spec), int(spec.enabled), webhook_id, user_id)).rowcount == 1)

    async def delete_webhook(self, webhook_id: int, user_id: int | None) -> bool:
        return await self._runner.write(lambda c: c.execute(
            "DELETE FROM webhooks WHERE id = ? AND (? IS NULL OR user_id = ?)",
            (webhook_id, user_id, user_id)).rowcount == 1)

    async def add_deliveries(self, deliveries: Sequence[NewDelivery]) -> None:
        await self._runner.write(lambda c: insert_deliveries(c, deliveries))

    async def claim_deliveries(self, worker: str, now: float, limit: int, lease: float) -> list[ClaimedDelivery]:
        return await self._runner.write(lambda c: _claim(c, worker, now, limit, lease))

    async def finish_delivery(self, result: DeliveryResult) -> None:
        await self._runner.write(lambda c: _finish(c, result))

    async def release_deliveries(self, worker: str) -> None:
        await self._runner.write(lambda c: c.execute(
            "UPDATE webhook_deliveries SET locked_by = NULL, locked_until = NULL WHERE locked_by = ?", (worker,)))

    async def record_unopened(self, now: float, limit: int) -> int:
        """Make the due unopened follow-ups (at most `limit`), with their in-app notifications."""
        return await self._runner.write(lambda c: _record_unopened(c, now, limit))

    async def deliveries(self, webhook_id: int, limit: int = 100) -> list[DeliveryReport]:
        return await self._runner.read(lambda c: _deliveries(c, webhook_id, limit))

    async def delivery_counts(self) -> dict[str, int]:
        return await self._runner.read(lambda c: {r[0]: r[1] for r in c.execute(
            "SELECT status, COUNT(*) FROM webhook_deliveries GROUP BY status")})


def _spec_values(s: WebhookSpec) -> tuple[Any, ...]:
    return (s.url, s.kind, ",".join(s.events), int(s.humans_only), int(s.first_only), s.unopened_after,
            s.digest, int(s.enabled))


def webhook_from_row(r: Any) -> Webhook:
    """A row with the webhooks table's columns under their own names."""
    spec = WebhookSpec(r["url"], r["kind"], tuple(e for e in r["events"].split(",") if e), bool(r["humans_only"]),
                       bool(r["first_only"]), r["unopened_after"], r["digest"], bool(r["enabled"]))
    return Webhook(r["id"], r["user_id"], spec, r["created_at"], r["failing_since"], r["secret"])


def enabled_webhooks(c: sqlite3.Connection, user_ids: Sequence[int]) -> dict[int, list[Webhook]]:
    if not user_ids:
        return {}
    found: dict[int, list[Webhook]] = {}
    marks = ",".join("?" * len(user_ids))
    for r in c.execute(f"SELECT * FROM webhooks WHERE enabled = 1 AND user_id IN ({marks}) ORDER BY id", user_ids):
        found.setdefault(r["user_id"], []).append(webhook_from_row(r))
    return found


def insert_deliveries(c: sqlite3.Connection, deliveries: Sequence[NewDelivery]) -> None:
    c.executemany(
        "INSERT INTO webhook_deliveries (id, webhook_id, payload, due_at, created_at) VALUES (?,?,?,?,?)",
        [(d.id, d.webhook_id, d.payload, d.due_at, d.created_at) for d in deliveries])


def _claim(c: sqlite3.Connection, worker: str, now: float, limit: int, lease: float) -> list[ClaimedDelivery]:
    rows = c.execute(
        "SELECT d.id AS d_id, d.payload, d.attempts, d.created_at AS d_created_at, w.* FROM webhook_deliveries d"
        " JOIN webhooks w ON w.id = d.webhook_id WHERE d.status = 'queued' AND d.due_at <= ? AND w.enabled = 1"
        " AND (d.locked_until IS NULL OR d.locked_until < ?) ORDER BY d.due_at LIMIT ?",
        (now, now, limit)).fetchall()
    c.executemany("UPDATE webhook_deliveries SET locked_by = ?, locked_until = ? WHERE id = ?",
                  [(worker, now + lease, r["d_id"]) for r in rows])
    return [ClaimedDelivery(r["d_id"], webhook_from_row(r), r["payload"], r["attempts"], r["d_created_at"])
            for r in rows]


def _finish(c: sqlite3.Connection, r: DeliveryResult) -> None:
    a = r.attempt
    c.execute("INSERT INTO webhook_attempts (delivery_id, at, status_code, latency, error) VALUES (?,?,?,?,?)",
              (a.delivery_id, a.at, a.status_code, a.latency, a.error))
    c.execute("UPDATE webhook_deliveries SET status = ?, due_at = ?, attempts = attempts + 1, last_error = ?,"
              " locked_by = NULL, locked_until = NULL WHERE id = ?", (r.status, r.due_at, a.error, a.delivery_id))
    c.execute("UPDATE webhooks SET failing_since = ?, enabled = CASE WHEN ? THEN 0 ELSE enabled END WHERE id = ?",
              (r.failing_since, int(r.disable), r.webhook_id))
    if r.disable:
        c.execute("UPDATE webhook_deliveries SET status = 'failed', last_error = 'webhook disabled'"
                  " WHERE webhook_id = ? AND status = 'queued'", (r.webhook_id,))
    if r.notice is not None:
        n = r.notice
        c.execute("INSERT INTO notifications (user_id, message_id, type, recipient, url, text, at)"
                  " VALUES (?,?,?,?,?,?,?)", (n.user_id, n.message_id, n.type, n.recipient, n.url, n.text, n.at))


def _deliveries(c: sqlite3.Connection, webhook_id: int, limit: int) -> list[DeliveryReport]:
    rows = c.execute("SELECT * FROM webhook_deliveries WHERE webhook_id = ? ORDER BY created_at DESC, id LIMIT ?",
                     (webhook_id, limit)).fetchall()
    ids = [r["id"] for r in rows]
    tries: dict[str, list[Attempt]] = {i: [] for i in ids}
    if ids:
        marks = ",".join("?" * len(ids))
        for a in c.execute(f"SELECT * FROM webhook_attempts WHERE delivery_id IN ({marks}) ORDER BY id", ids):
            tries[a["delivery_id"]].append(Attempt(a["delivery_id"], a["at"], a["status_code"], a["latency"], a["error"]))
    return [DeliveryReport(r["id"], r["status"], r["attempts"], r["last_error"], r["created_at"], r["due_at"],
                           r["payload"], tuple(tries[r["id"]])) for r in rows]


# copies with opens tracked, delivered after the webhook was made and unopened_after ago, no
# human open, no follow-up yet; untracked recipients have no copy, bounced ones no delivered_at
UNOPENED_SQL = (
    "SELECT w.*, k.id AS copy_id, k.message_id AS m_id, m.message_id AS header_id, m.subject, k.recipient,"
    " k.delivered_at FROM webhooks w JOIN messages m ON m.user_id = w.user_id JOIN copies k ON k.message_id = m.id"
    " WHERE w.enabled AND (',' || w.events || ',') LIKE '%,unopened,%' AND k.opens"
    " AND k.delivered_at >= w.created_at AND k.delivered_at <= {now} - w.unopened_after"
    " AND NOT EXISTS (SELECT 1 FROM events e WHERE e.copy_id = k.id AND e.type = 'open' AND e.class = 'human')"
    " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.id = 'evt_unopened_' || w.id || '_' || k.id)"
    " ORDER BY k.delivered_at LIMIT {limit}"
)


def unopened_copy(r: Any) -> UnopenedCopy:
    return UnopenedCopy(webhook_from_row(r), r["copy_id"], r["m_id"], r["header_id"], r["subject"], r["recipient"],
                        r["delivered_at"])


def _record_unopened(c: sqlite3.Connection, now: float, limit: int) -> int:
    found = [unopened_copy(r) for r in c.execute(UNOPENED_SQL.format(now="?", limit="?"), (now, limit))]
    keys, _ = privacy_lookups([f.recipient for f in found if f.recipient])
    dnt = frozenset(r[0] for r in c.execute(
        f"SELECT entry FROM do_not_track WHERE entry IN ({','.join('?' * len(keys)) or 'NULL'})", keys))
    made = 0
    for delivery, notice in plan_unopened(found, dnt, now):
        if c.execute("INSERT OR IGNORE INTO webhook_deliveries (id, webhook_id, payload, due_at, created_at)"
                     " VALUES (?,?,?,?,?)", (delivery.id, delivery.webhook_id, delivery.payload, delivery.due_at,
                                             delivery.created_at)).rowcount:
            c.execute("INSERT INTO notifications (user_id, message_id, type, recipient, url, text, at)"
                      " VALUES (?,?,?,?,?,?,?)", (notice.user_id, notice.message_id, notice.type, notice.recipient,
                                                  notice.url, notice.text, notice.at))
            made += 1
    return made
