"""SQLite queries behind the hits recorder, the JSON API and the panel.

Counting rules (DESIGN "JSON API"): every hit is an event; ``opens``/``clicks`` count
every open/click event, ``human_*`` only class ``human``. What a batch of hits means
(implied opens, notifications) is decided in relay/hit_rules.py.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Sequence

from relay.errors import StoreUnavailable
from relay.hit_rules import CopyFacts, open_questions, plan_hits
from relay.store.counting import add_counts, counts_from_row
from relay.store.link_lists import by_position, from_json
from relay.store.queries import Cursor, message_list_sql
from relay.store.sqlite_webhooks import enabled_webhooks, insert_deliveries
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

if TYPE_CHECKING:
    from relay.store.sqlite_runner import SqliteRunner

# a batch of events as one JSON array of rows, each row's values in the order named here
_INSERT_EVENTS_JSON = (
    "INSERT INTO events (copy_id, message_id, type, at, position, ip, user_agent, class, implied)"
    " SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6,"
    " value ->> 7, value ->> 8 FROM json_each(?)"
)
_COUNT_COLUMNS = (
    "COALESCE(SUM(type = 'open'), 0), COALESCE(SUM(type = 'open' AND class = 'human'), 0),"
    " COALESCE(SUM(type = 'click'), 0), COALESCE(SUM(type = 'click' AND class = 'human'), 0),"
    " MIN(CASE WHEN type = 'open' THEN at END), MAX(CASE WHEN type = 'open' THEN at END)"
)


class ReportsMixin:
    """Mixed into SqliteStore; uses its self._runner."""

    _runner: SqliteRunner

    async def record_hits(self, events: Sequence[NewEvent]) -> int:
        """Insert a batch of hits, their implied opens and the in-app notifications they
        cause, in one transaction. Returns the number of hit events stored (events whose
        copy was erased meanwhile are skipped)."""
        return await self._runner.write(lambda c: _guarded(_record_hits, c, events))

    async def message_reports(self, user_id: int | None, *, tracked: bool | None = None, limit: int = 100,
                              offset: int = 0, before: Cursor | None = None, search: str = "") -> list[MessageReport]:
        sql, args = message_list_sql(lambda n: f"?{n}", user_id=user_id, tracked=tracked, before=before,
                                     search=search, limit=limit, offset=offset)
        return await self._runner.read(lambda c: _guarded(lambda c: _reports(c, c.execute(sql, args).fetchall()), c))

    async def message_report(self, message_id: int, user_id: int | None,
                             max_events: int = 10000) -> MessageReport | None:
        def job(c: sqlite3.Connection) -> MessageReport | None:
            sql = "SELECT * FROM messages WHERE id = ? AND is_dsn = 0"
            args: list[Any] = [message_id]
            if user_id is not None:
                sql += " AND user_id = ?"
                args.append(user_id)
            row = c.execute(sql, args).fetchone()
            if row is None:
                return None
            [report] = _reports(c, [row])
            return _with_details(c, report, max_events)

        return await self._runner.read(lambda c: _guarded(job, c))

    async def notifications(self, user_id: int, limit: int = 100, *, unread_only: bool = False,
                            after_id: int | None = None) -> list[Notification]:
        def job(c: sqlite3.Connection) -> list[Notification]:
            where, args = "n.user_id = ?", [user_id]
            if unread_only:
                where += " AND n.read = 0"
            if after_id is not None:
                where += " AND n.id > ?"
                args.append(after_id)
            order = "n.id" if after_id is not None else "n.at DESC, n.id DESC"
            rows = c.execute(
                "SELECT n.*, m.message_id AS header_id, m.subject FROM notifications n"
                f" LEFT JOIN messages m ON m.id = n.message_id WHERE {where} ORDER BY {order} LIMIT ?",
                (*args, limit)).fetchall()
            return [Notification(r["id"], r["message_id"], r["header_id"] or "", r["subject"] or "", r["type"],
                                 r["recipient"], r["url"], r["text"], r["at"], bool(r["read"])) for r in rows]

        return await self._runner.read(lambda c: _guarded(job, c))

    async def unread_notifications(self, user_id: int) -> int:
        return await self._runner.read(lambda c: c.execute(
            "SELECT COUNT(*) FROM notifications WHERE user_id = ? AND read = 0", (user_id,)).fetchone()[0])

    async def newest_notification(self, user_id: int) -> int:
        return await self._runner.read(lambda c: c.execute(
            "SELECT COALESCE(MAX(id), 0) FROM notifications WHERE user_id = ?", (user_id,)).fetchone()[0])

    async def mark_notifications_read(self, user_id: int, ids: Sequence[int] | None) -> int:
        def job(c: sqlite3.Connection) -> int:
            if ids is None:
                return c.execute("UPDATE notifications SET read = 1 WHERE user_id = ? AND read = 0",
                                 (user_id,)).rowcount
            return sum(c.execute("UPDATE notifications SET read = 1 WHERE user_id = ? AND id = ? AND read = 0",
                                 (user_id, i)).rowcount for i in ids)

        return await self._runner.write(job)

    # web panel sessions (admin/sessions.py decides when they expire)

    async def add_panel_session(self, id_hash: str, user_id: int, now: float, ip: str) -> None:
        await self._runner.write(lambda c: c.execute(
            "INSERT INTO panel_sessions (id_hash, user_id, created_at, last_seen, ip) VALUES (?, ?, ?, ?, ?)",
            (id_hash, user_id, now, now, ip)))

    async def panel_session(self, id_hash: str) -> PanelSession | None:
        def job(c: sqlite3.Connection) -> PanelSession | None:
            row = c.execute(
                "SELECT s.created_at, s.last_seen, u.id, u.email, u.is_admin, u.language, u.timezone FROM panel_sessions s"
                " JOIN users u ON u.id = s.user_id WHERE s.id_hash = ? AND NOT u.disabled", (id_hash,)).fetchone()
            if row is None:
                return None
            # no password hash: a session needs none, and it should not wander into views
            return PanelSession(User(row["id"], row["email"], bool(row["is_admin"]), language=row["language"],
                                     timezone=row["timezone"]),
                                row["created_at"], row["last_seen"])

        return await self._runner.read(lambda c: _guarded(job, c))

    async def touch_panel_session(self, id_hash: str, now: float) -> None:
        await self._runner.write(lambda c: c.execute(
            "UPDATE panel_sessions SET last_seen = MAX(last_seen, ?) WHERE id_hash = ?", (now, id_hash)))

    async def delete_panel_session(self, id_hash: str) -> None:
        await self._runner.write(lambda c: c.execute("DELETE FROM panel_sessions WHERE id_hash = ?", (id_hash,)))

    async def delete_stale_panel_sessions(self, seen_before: float, created_before: float) -> int:
        return await self._runner.write(lambda c: c.execute(
            "DELETE FROM panel_sessions WHERE last_seen < ? OR created_at < ?",
            (seen_before, created_before)).rowcount)


def _guarded(job: Any, c: sqlite3.Connection, *args: Any) -> Any:
    # A locked or broken database inside a job is an outage the caller retries, not a bug.
    try:
        return job(c, *args)
    except sqlite3.OperationalError as e:
        raise StoreUnavailable(f"store unavailable: {e}") from e


def _record_hits(c: sqlite3.Connection, events: Sequence[NewEvent]) -> int:
    copy_ids = sorted({e.copy_id for e in events})
    copies = _copy_facts(c, copy_ids)
    owners = sorted({f.user_id for f in copies.values() if f.user_id is not None})
    plan = plan_hits(events, copies, _opened(c, open_questions(events)),
                     _links(c, {f.message_id for f in copies.values()}), enabled_webhooks(c, owners))
    rows = [(e.copy_id, e.message_id, e.type, e.at, e.position, e.ip, e.user_agent, e.cls, int(e.implied))
            for e in plan.events]
    # One statement for the whole batch: sqlite3 releases and retakes the GIL around every
    # statement, and under HTTP load each retake waits for the event loop thread. One
    # statement per hit held one hits process to 6.7k pixels/s, one per batch to 8.5k.
    c.execute(_INSERT_EVENTS_JSON, (json.dumps(rows, ensure_ascii=False),))
    if plan.notifications:  # most batches have none: no statement, no GIL hand-off
        c.executemany(
            "INSERT INTO notifications (user_id, message_id, type, recipient, url, text, at) VALUES (?,?,?,?,?,?,?)",
            [(n.user_id, n.message_id, n.type, n.recipient, n.url, n.text, n.at) for n in plan.notifications])
    if plan.deliveries:  # the webhook outbox: in this transaction, so no notification is lost
        insert_deliveries(c, plan.deliveries)
    return plan.stored


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values)) or "NULL"


def _copy_facts(c: sqlite3.Connection, copy_ids: Sequence[int]) -> dict[int, CopyFacts]:
    rows = c.execute(
        "SELECT k.id, k.recipient, k.message_id, m.user_id, m.subject, m.message_id AS header_id, p.notify"
        " FROM copies k JOIN messages m ON m.id = k.message_id LEFT JOIN policies p ON p.user_id = m.user_id"
        f" WHERE k.id IN ({_marks(copy_ids)})", copy_ids)
    return {r["id"]: CopyFacts(r["message_id"], r["user_id"], r["recipient"], r["subject"], r["notify"],
                               r["header_id"]) for r in rows}


def _opened(c: sqlite3.Connection, pairs: Sequence[tuple[int, str]]) -> set[tuple[int, str]]:
    """Which of these (copy id, class) pairs have an open stored."""
    return {(r[0], r[1]) for r in c.execute(
        "SELECT p.value ->> 0, p.value ->> 1 FROM json_each(?) p WHERE EXISTS (SELECT 1 FROM events e"
        " WHERE e.copy_id = p.value ->> 0 AND e.type = 'open' AND e.class = p.value ->> 1)", (json.dumps(pairs),))}


def _links(c: sqlite3.Connection, message_ids: set[int]) -> dict[tuple[int, int], str]:
    ids = sorted(message_ids)
    rows = c.execute(f"SELECT message_id, urls FROM links WHERE message_id IN ({_marks(ids)})", ids)
    return {(mid, pos): url for mid, urls in rows for pos, url in by_position(from_json(urls)).items()}


def _reports(c: sqlite3.Connection, rows: Sequence[sqlite3.Row]) -> list[MessageReport]:
    if not rows:
        return []
    ids = [r["id"] for r in rows]
    marks = ",".join("?" * len(ids))
    per_copy = {r[0]: counts_from_row(r[1:]) for r in c.execute(
        f"SELECT copy_id, {_COUNT_COLUMNS} FROM events WHERE message_id IN ({marks}) GROUP BY copy_id", ids)}
    recipients: dict[int, list[RecipientReport]] = {i: [] for i in ids}
    for r in c.execute(
            "SELECT r.message_id, r.address, r.status, r.detail, r.copy_id, k.recipient AS copy_recipient FROM recipients r"
            f" LEFT JOIN copies k ON k.id = r.copy_id WHERE r.message_id IN ({marks}) ORDER BY r.id", ids):
        tracked = r["copy_id"] is not None
        recipients[r["message_id"]].append(RecipientReport(
            r["address"], r["status"], tracked, tracked and r["copy_recipient"] is None,
            per_copy.get(r["copy_id"], HitCounts()), r["detail"]))
    totals: dict[int, HitCounts] = {}
    for k in c.execute(f"SELECT id, message_id FROM copies WHERE message_id IN ({marks})", ids):
        totals[k[1]] = add_counts(totals.get(k[1], HitCounts()), per_copy.get(k[0], HitCounts()))
    return [
        MessageReport(
            id=r["id"], user_id=r["user_id"], message_id=r["message_id"], subject=r["subject"],
            received_at=r["received_at"], sent_at=r["sent_at"], status=r["status"],
            track_opens=bool(r["track_opens"]), track_clicks=bool(r["track_clicks"]),
            counts=totals.get(r["id"], HitCounts()), recipients=tuple(recipients[r["id"]]),
        )
        for r in rows
    ]


def _with_details(c: sqlite3.Connection, report: MessageReport, max_events: int) -> MessageReport:
    clicks = {r[0]: (int(r[1]), int(r[2])) for r in c.execute(
        "SELECT position, COUNT(*), COALESCE(SUM(class = 'human'), 0) FROM events"
        " WHERE message_id = ? AND type = 'click' GROUP BY position", (report.id,))}
    row = c.execute("SELECT urls FROM links WHERE message_id = ?", (report.id,)).fetchone()
    links = tuple(LinkReport(pos, url, *clicks.get(pos, (0, 0)))
                  for pos, url in by_position(from_json(row[0] if row else None)).items())
    events = tuple(
        EventReport(r["type"], r["at"], r["recipient"], r["url"], r["ip"], r["user_agent"], r["class"],
                    bool(r["implied"]))
        for r in c.execute(
            "SELECT e.type, e.at, e.ip, e.user_agent, e.class, e.implied, k.recipient,"
            " CASE WHEN e.type = 'click' THEN l.urls ->> e.position END AS url FROM events e"
            " JOIN copies k ON k.id = e.copy_id"
            " LEFT JOIN links l ON l.message_id = e.message_id"
            " WHERE e.message_id = ? ORDER BY e.at, e.id LIMIT ?", (report.id, max_events))
    )
    return replace(report, links=links, events=events)
