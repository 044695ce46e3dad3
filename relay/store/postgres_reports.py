"""PostgreSQL queries behind the hits recorder, the JSON API and the panel (see sqlite_reports.py)."""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, AsyncContextManager, Sequence

import asyncpg

from relay.hit_rules import CopyFacts, open_questions, plan_hits
from relay.records import (
    EventReport,
    HitCounts,
    LinkReport,
    MessageReport,
    NewEvent,
    Notification,
    PanelSession,
    RecipientReport,
    User,
)
from relay.store.counting import add_counts, counts_from_row
from relay.store.link_lists import by_position
from relay.store.queries import Cursor, message_list_sql
from relay.store.postgres_webhooks import enabled_webhooks, insert_deliveries

_COUNT_COLUMNS = (
    "COUNT(*) FILTER (WHERE type = 'open'), COUNT(*) FILTER (WHERE type = 'open' AND class = 'human'),"
    " COUNT(*) FILTER (WHERE type = 'click'), COUNT(*) FILTER (WHERE type = 'click' AND class = 'human'),"
    " MIN(at) FILTER (WHERE type = 'open'), MAX(at) FILTER (WHERE type = 'open')"
)


class PgReportsMixin:
    """Mixed into PostgresStore; uses its self._conn()."""

    if TYPE_CHECKING:
        def _conn(self, *, transaction: bool = False) -> AsyncContextManager[asyncpg.Connection]: ...
        async def _execute(self, sql: str, *args: Any) -> str: ...
        async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None: ...

    async def record_hits(self, events: Sequence[NewEvent]) -> int:
        """Insert a batch of hits, their implied opens and the in-app notifications they
        cause, in one transaction. Returns the number of hits stored (hits whose copy was
        erased meanwhile are skipped)."""
        async with self._conn(transaction=True) as c:
            return await _record_hits(c, events)

    async def message_reports(self, user_id: int | None, *, tracked: bool | None = None, limit: int = 100,
                              offset: int = 0, before: Cursor | None = None, search: str = "") -> list[MessageReport]:
        sql, args = message_list_sql(lambda n: f"${n}", user_id=user_id, tracked=tracked, before=before,
                                     search=search, limit=limit, offset=offset, like="ILIKE")
        async with self._conn() as c:
            return await _reports(c, await c.fetch(sql, *args))

    async def message_report(self, message_id: int, user_id: int | None,
                             max_events: int = 10000) -> MessageReport | None:
        async with self._conn() as c:
            row = await c.fetchrow(
                "SELECT * FROM messages WHERE id = $1 AND NOT is_dsn AND ($2::bigint IS NULL OR user_id = $2)",
                message_id, user_id)
            if row is None:
                return None
            [report] = await _reports(c, [row])
            return await _with_details(c, report, max_events)

    async def notifications(self, user_id: int, limit: int = 100, *, unread_only: bool = False,
                            after_id: int | None = None) -> list[Notification]:
        # $3: only unread; $4: only after this id (oldest first then, for a stream to resume)
        order = "n.id" if after_id is not None else "n.at DESC, n.id DESC"
        async with self._conn() as c:
            rows = await c.fetch(
                "SELECT n.*, m.message_id AS header_id, m.subject FROM notifications n"
                " LEFT JOIN messages m ON m.id = n.message_id WHERE n.user_id = $1"
                " AND (NOT $3 OR NOT n.read) AND ($4::bigint IS NULL OR n.id > $4)"
                f" ORDER BY {order} LIMIT $2", user_id, limit, unread_only, after_id)
        return [Notification(r["id"], r["message_id"], r["header_id"] or "", r["subject"] or "", r["type"],
                             r["recipient"], r["url"], r["text"], r["at"], r["read"]) for r in rows]

    async def unread_notifications(self, user_id: int) -> int:
        row = await self._fetchrow("SELECT COUNT(*) FROM notifications WHERE user_id = $1 AND NOT read", user_id)
        return row[0]

    async def newest_notification(self, user_id: int) -> int:
        row = await self._fetchrow("SELECT COALESCE(MAX(id), 0) FROM notifications WHERE user_id = $1", user_id)
        return row[0]

    async def mark_notifications_read(self, user_id: int, ids: Sequence[int] | None) -> int:
        if ids is None:
            status = await self._execute(
                "UPDATE notifications SET read = TRUE WHERE user_id = $1 AND NOT read", user_id)
        else:
            status = await self._execute(
                "UPDATE notifications SET read = TRUE WHERE user_id = $1 AND id = ANY($2::bigint[]) AND NOT read",
                user_id, list(ids))
        return int(status.rsplit(" ", 1)[1])

    # web panel sessions (admin/sessions.py decides when they expire)

    async def add_panel_session(self, id_hash: str, user_id: int, now: float, ip: str) -> None:
        await self._execute(
            "INSERT INTO panel_sessions (id_hash, user_id, created_at, last_seen, ip) VALUES ($1, $2, $3, $3, $4)",
            id_hash, user_id, now, ip)

    async def panel_session(self, id_hash: str) -> PanelSession | None:
        async with self._conn() as c:
            row = await c.fetchrow(
                "SELECT s.created_at, s.last_seen, u.id, u.email, u.is_admin, u.language, u.timezone FROM panel_sessions s"
                " JOIN users u ON u.id = s.user_id WHERE s.id_hash = $1 AND NOT u.disabled", id_hash)
        if row is None:
            return None
        # no password hash: a session needs none, and it should not wander into views
        return PanelSession(User(row["id"], row["email"], row["is_admin"], language=row["language"],
                                 timezone=row["timezone"]), row["created_at"], row["last_seen"])

    async def touch_panel_session(self, id_hash: str, now: float) -> None:
        await self._execute(
            "UPDATE panel_sessions SET last_seen = GREATEST(last_seen, $1) WHERE id_hash = $2", now, id_hash)

    async def delete_panel_session(self, id_hash: str) -> None:
        await self._execute("DELETE FROM panel_sessions WHERE id_hash = $1", id_hash)

    async def delete_stale_panel_sessions(self, seen_before: float, created_before: float) -> int:
        status = await self._execute(
            "DELETE FROM panel_sessions WHERE last_seen < $1 OR created_at < $2", seen_before, created_before)
        return int(status.rsplit(" ", 1)[-1])


async def insert_events(c: asyncpg.Connection, events: Sequence[NewEvent]) -> None:
    """A batch of events in one statement: one array per column."""
    columns = list(zip(*[(e.copy_id, e.message_id, e.type, e.at, e.position, e.ip, e.user_agent, e.cls, e.implied)
                         for e in events])) or [[]] * 9
    await c.execute(
        "INSERT INTO events (copy_id, message_id, type, at, position, ip, user_agent, class, implied)"
        " SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::float8[], $5::int[], $6::text[],"
        " $7::text[], $8::text[], $9::bool[])", *[list(col) for col in columns])


async def _record_hits(c: asyncpg.Connection, events: Sequence[NewEvent]) -> int:
    copy_ids = sorted({e.copy_id for e in events})
    # FOR UPDATE on the copies: two hits processes recording for one copy take turns, so
    # "the first human open" (and its notification) is decided once
    rows = await c.fetch(
        "SELECT k.id, k.recipient, k.message_id, m.user_id, m.subject, m.message_id AS header_id, p.notify"
        " FROM copies k JOIN messages m ON m.id = k.message_id LEFT JOIN policies p ON p.user_id = m.user_id"
        " WHERE k.id = ANY($1::bigint[]) ORDER BY k.id FOR UPDATE OF k", copy_ids)
    copies = {r["id"]: CopyFacts(r["message_id"], r["user_id"], r["recipient"], r["subject"], r["notify"],
                                 r["header_id"]) for r in rows}
    pairs = open_questions(events)
    opened = {(r[0], r[1]) for r in await c.fetch(
        "SELECT p.copy_id, p.cls FROM unnest($1::bigint[], $2::text[]) AS p (copy_id, cls) WHERE EXISTS"
        " (SELECT 1 FROM events e WHERE e.copy_id = p.copy_id AND e.type = 'open' AND e.class = p.cls)",
        [k for k, _ in pairs], [cls for _, cls in pairs])}
    rows = await c.fetch("SELECT message_id, urls FROM links WHERE message_id = ANY($1::bigint[])",
                         sorted({f.message_id for f in copies.values()}))
    links = {(mid, pos): url for mid, urls in rows for pos, url in by_position(urls).items()}
    owners = sorted({f.user_id for f in copies.values() if f.user_id is not None})
    plan = plan_hits(events, copies, opened, links, await enabled_webhooks(c, owners))
    await insert_events(c, plan.events)
    await c.executemany(
        "INSERT INTO notifications (user_id, message_id, type, recipient, url, text, at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [(n.user_id, n.message_id, n.type, n.recipient, n.url, n.text, n.at) for n in plan.notifications])
    if plan.deliveries:  # the webhook outbox: in this transaction, so no notification is lost
        await insert_deliveries(c, plan.deliveries)
    return plan.stored


async def _reports(c: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> list[MessageReport]:
    if not rows:
        return []
    ids = [r["id"] for r in rows]
    per_copy = {r[0]: counts_from_row(r[1:]) for r in await c.fetch(
        f"SELECT copy_id, {_COUNT_COLUMNS} FROM events WHERE message_id = ANY($1::bigint[]) GROUP BY copy_id", ids)}
    recipients: dict[int, list[RecipientReport]] = {i: [] for i in ids}
    for r in await c.fetch(
            "SELECT r.message_id, r.address, r.status, r.detail, r.copy_id, k.recipient AS copy_recipient FROM recipients r"
            " LEFT JOIN copies k ON k.id = r.copy_id WHERE r.message_id = ANY($1::bigint[]) ORDER BY r.id", ids):
        tracked = r["copy_id"] is not None
        recipients[r["message_id"]].append(RecipientReport(
            r["address"], r["status"], tracked, tracked and r["copy_recipient"] is None,
            per_copy.get(r["copy_id"], HitCounts()), r["detail"]))
    totals: dict[int, HitCounts] = {}
    for k in await c.fetch("SELECT id, message_id FROM copies WHERE message_id = ANY($1::bigint[])", ids):
        totals[k[1]] = add_counts(totals.get(k[1], HitCounts()), per_copy.get(k[0], HitCounts()))
    return [
        MessageReport(
            id=r["id"], user_id=r["user_id"], message_id=r["message_id"], subject=r["subject"],
            received_at=r["received_at"], sent_at=r["sent_at"], status=r["status"],
            track_opens=r["track_opens"], track_clicks=r["track_clicks"],
            counts=totals.get(r["id"], HitCounts()), recipients=tuple(recipients[r["id"]]),
        )
        for r in rows
    ]


async def _with_details(c: asyncpg.Connection, report: MessageReport, max_events: int) -> MessageReport:
    clicks = {r[0]: (int(r[1]), int(r[2])) for r in await c.fetch(
        "SELECT position, COUNT(*), COUNT(*) FILTER (WHERE class = 'human') FROM events"
        " WHERE message_id = $1 AND type = 'click' GROUP BY position", report.id)}
    urls = await c.fetchval("SELECT urls FROM links WHERE message_id = $1", report.id)
    links = tuple(LinkReport(pos, url, *clicks.get(pos, (0, 0))) for pos, url in by_position(urls).items())
    events = tuple(
        EventReport(r["type"], r["at"], r["recipient"], r["url"], r["ip"], r["user_agent"], r["class"], r["implied"])
        for r in await c.fetch(
            "SELECT e.type, e.at, e.ip, e.user_agent, e.class, e.implied, k.recipient,"
            " CASE WHEN e.type = 'click' THEN l.urls[e.position + 1] END AS url FROM events e"  # arrays count from 1
            " JOIN copies k ON k.id = e.copy_id"
            " LEFT JOIN links l ON l.message_id = e.message_id"
            " WHERE e.message_id = $1 ORDER BY e.at, e.id LIMIT $2", report.id, max_events)
    )
    return replace(report, links=links, events=events)
