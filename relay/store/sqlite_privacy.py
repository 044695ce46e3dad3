"""SQLite queries behind the privacy lifecycle: the lists with their records, the retention
purge, erasure and access (relay/privacy.py holds the rules; trackrelay/privacy_cli.py and
admin/privacy_api.py are the callers)."""
from __future__ import annotations

import json
import sqlite3
import time
from typing import TYPE_CHECKING, Sequence

from relay.policy import erased_entry
from relay.privacy import RecipientRow, erase_links, plan_erasure
from relay.records import ErasureCounts, PrivacyRecord, PurgeCounts, SubjectData, SubjectEvent, SubjectMail
from relay.store.queries import PENDING_SQL, purgeable_sql
from relay.store.tables import PRIVACY_TABLES
from relay.store.link_lists import from_json, to_json

if TYPE_CHECKING:
    from relay.store.sqlite_runner import SqliteRunner

_PURGEABLE = purgeable_sql(":cutoff")


class PrivacyMixin:
    """Mixed into SqliteStore; uses its self._runner and its checkpoint after an erase."""

    _runner: SqliteRunner
    _erased_since_checkpoint: bool

    async def _checkpoint_due(self) -> None: ...

    async def privacy_list(self, kind: str) -> list[str]:
        return [r.entry for r in await self.privacy_records(kind)]

    async def privacy_records(self, kind: str) -> list[PrivacyRecord]:
        table, column = PRIVACY_TABLES[kind]
        return await self._runner.read(lambda c: [_record(kind, r) for r in c.execute(
            f"SELECT * FROM {table} ORDER BY {column}")])

    async def privacy_add(self, kind: str, entry: str, *, source: str = "cli", recorded_by: str = "",
                          at: float | None = None, given_at: float | None = None) -> bool:
        record = PrivacyRecord(entry, time.time() if at is None else at, recorded_by, source, given_at)
        return await self.privacy_add_many(kind, [record]) == 1

    async def privacy_add_many(self, kind: str, records: Sequence[PrivacyRecord]) -> int:
        """Adds the entries not listed yet (an entry listed keeps its first record); returns how many."""
        return await self._runner.write(lambda c: sum(_insert_record(c, kind, r) for r in records))

    async def privacy_del(self, kind: str, entry: str) -> bool:
        table, column = PRIVACY_TABLES[kind]
        return await self._runner.write(
            lambda c: c.execute(f"DELETE FROM {table} WHERE {column} = ?", (entry.lower(),)).rowcount == 1
        )

    # retention

    async def purge(self, cutoff: float, limit: int) -> PurgeCounts:
        """One bounded batch of what is older than cutoff; the caller repeats until nothing is left."""
        counts = await self._runner.write(lambda c: _purge_batch(c, cutoff, limit))
        if counts.total:
            self._erased_since_checkpoint = True
            await self._checkpoint_due()
        return counts

    async def purge_preview(self, cutoff: float) -> PurgeCounts:
        return await self._runner.read(lambda c: _purge_counts(c, cutoff))

    async def retired_link(self, token: str, position: int) -> str | None:
        row = await self._runner.read_point(lambda c: c.execute(
            "SELECT l.url FROM retired_tokens t JOIN retired_links l ON l.queue_id = t.queue_id"
            " WHERE t.token = ? AND l.position = ?", (token, position)).fetchone())
        return row[0] if row else None

    # access and erasure

    async def subject(self, address: str) -> SubjectData:
        return await self._runner.read(lambda c: _subject(c, address.lower()))

    async def erase_subject(self, address: str, *, keep_trackable: bool, now: float) -> ErasureCounts:
        """Everything about the address, gone from the store files (a checkpoint follows).
        The scans of free text (webhook payloads, captured copies) run on a reader first, so
        the writer - which intake and hits wait for - only deletes by key."""
        address = address.lower()
        scanned = await self._runner.read(lambda c: _text_mentions(c, address))
        counts = await self._runner.write(lambda c: _erase(c, address, scanned, keep_trackable, now))
        self._erased_since_checkpoint = True
        await self._checkpoint_due()
        return counts

    async def erase_user_mail(self, user_id: int, limit: int) -> int:
        """A batch of a user's mail that is no longer queued, with the capture upstream's
        copies of it; returns how many messages went (0: all that can go is gone)."""
        def job(c: sqlite3.Connection) -> int:
            ids = [r[0] for r in c.execute(
                f"SELECT id FROM messages WHERE user_id = ? AND status NOT IN {PENDING_SQL} LIMIT ?", (user_id, limit))]
            _delete_messages(c, ids, with_captured=True)
            return len(ids)

        gone = await self._runner.write(job)
        if gone:
            self._erased_since_checkpoint = True
            await self._checkpoint_due()
        return gone


def _record(kind: str, row: sqlite3.Row) -> PrivacyRecord:
    return PrivacyRecord(row[PRIVACY_TABLES[kind][1]], row["created_at"], row["recorded_by"], row["source"],
                         row["given_at"] if kind == "consent" else None)


def _insert_record(c: sqlite3.Connection, kind: str, r: PrivacyRecord) -> int:
    table, column = PRIVACY_TABLES[kind]
    if kind == "consent":
        return c.execute("INSERT OR IGNORE INTO consent (address, created_at, recorded_by, source, given_at)"
                         " VALUES (?, ?, ?, ?, ?)",
                         (r.entry.lower(), r.recorded_at, r.recorded_by, r.source, r.given_at)).rowcount
    return c.execute(f"INSERT OR IGNORE INTO {table} ({column}, created_at, recorded_by, source) VALUES (?, ?, ?, ?)",
                     (r.entry.lower(), r.recorded_at, r.recorded_by, r.source)).rowcount


def _marks(items: Sequence) -> str:
    return ",".join("?" * len(items))


def _purge_batch(c: sqlite3.Connection, cutoff: float, limit: int) -> PurgeCounts:
    events = c.execute("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < ? ORDER BY at LIMIT ?)",
                       (cutoff, limit)).rowcount
    notifications = c.execute(
        "DELETE FROM notifications WHERE id IN (SELECT n.id FROM users u"
        " JOIN notifications n ON n.user_id = u.id AND n.at < ? LIMIT ?)", (cutoff, limit)).rowcount
    ids = [r[0] for r in c.execute(f"SELECT m.id FROM messages m WHERE {_PURGEABLE} ORDER BY m.received_at"
                                   " LIMIT :limit", {"cutoff": cutoff, "limit": limit})]
    _retire_links(c, ids)
    _delete_messages(c, ids, with_captured=False)
    captured = c.execute("DELETE FROM captured WHERE id IN (SELECT id FROM captured WHERE at < ? LIMIT ?)",
                         (cutoff, limit)).rowcount
    deliveries = c.execute(
        "DELETE FROM webhook_deliveries WHERE id IN (SELECT d.id FROM webhooks w JOIN webhook_deliveries d"
        " ON d.webhook_id = w.id AND d.created_at < ? WHERE d.status != 'queued' LIMIT ?)", (cutoff, limit)).rowcount
    return PurgeCounts(events, len(ids), notifications, captured, deliveries)


def _purge_counts(c: sqlite3.Connection, cutoff: float) -> PurgeCounts:
    def count(sql: str, args: dict) -> int:
        return c.execute(sql, args).fetchone()[0]

    args = {"cutoff": cutoff}
    return PurgeCounts(
        events=count("SELECT count(*) FROM events WHERE at < :cutoff", args),
        messages=count(f"SELECT count(*) FROM messages m WHERE {_PURGEABLE}", args),
        notifications=count("SELECT count(*) FROM notifications WHERE at < :cutoff", args),
        captured=count("SELECT count(*) FROM captured WHERE at < :cutoff", args),
        deliveries=count("SELECT count(*) FROM webhook_deliveries WHERE created_at < :cutoff"
                         " AND status != 'queued'", args),
    )


def _retire_links(c: sqlite3.Connection, message_ids: Sequence[int]) -> None:
    """Links in purged mail keep redirecting: the URLs by the message's queue id, its copies' tokens to it."""
    if not message_ids:
        return
    marks = _marks(message_ids)
    # a link list's element i is position i (json_each's key); null elements are gaps
    c.execute(f"INSERT OR IGNORE INTO retired_links (queue_id, position, url) SELECT m.queue_id, u.key, u.value"
              f" FROM links l JOIN messages m ON m.id = l.message_id, json_each(l.urls) u"
              f" WHERE l.message_id IN ({marks}) AND u.value IS NOT NULL", message_ids)
    c.execute(f"INSERT OR IGNORE INTO retired_tokens (token, queue_id) SELECT c.token, m.queue_id"
              f" FROM copies c JOIN messages m ON m.id = c.message_id WHERE c.message_id IN ({marks})"
              " AND EXISTS (SELECT 1 FROM retired_links r WHERE r.queue_id = m.queue_id)", message_ids)


def _delete_messages(c: sqlite3.Connection, ids: Sequence[int], *, with_captured: bool) -> int:
    """The messages and all that hangs on them (the schema cascades: copies, recipients,
    links, events, notifications, bodies)."""
    if not ids:
        return 0
    if with_captured:
        c.execute(f"DELETE FROM captured WHERE message_id IN ({_marks(ids)})", ids)
    return c.execute(f"DELETE FROM messages WHERE id IN ({_marks(ids)})", ids).rowcount


def _text_mentions(c: sqlite3.Connection, address: str) -> tuple[list[str], list[int], list[tuple[str, int]]]:
    """Rows whose free text names the address: webhook payloads (as JSON writes it, too),
    captured copies (envelope or message), retired link URLs."""
    forms = {address, json.dumps(address)[1:-1]}
    deliveries = {r[0] for form in forms for r in c.execute(
        "SELECT id FROM webhook_deliveries WHERE instr(lower(payload), ?) > 0", (form,))}
    captured = [r[0] for r in c.execute(
        "SELECT id FROM captured WHERE instr(lower(rcpt_tos), ?) > 0 OR instr(lower(CAST(data AS TEXT)), ?) > 0",
        (address, address))]
    links = [(r[0], r[1]) for r in c.execute(
        "SELECT queue_id, position FROM retired_links WHERE instr(lower(url), ?) > 0", (address,))]
    return sorted(deliveries), captured, links


def _erase(c: sqlite3.Connection, address: str, scanned: tuple[list[str], list[int], list[tuple[str, int]]],
           keep_trackable: bool, now: float) -> ErasureCounts:
    deliveries, captured, retired = scanned
    rows = c.execute(
        "SELECT r.id, r.message_id, r.copy_id, r.status, cp.recipient AS copy_recipient,"
        " (SELECT count(*) FROM recipients o WHERE o.message_id = r.message_id"
        "  AND lower(o.address) != :a) AS others"
        " FROM recipients r LEFT JOIN copies cp ON cp.id = r.copy_id"
        " WHERE lower(r.address) = :a", {"a": address}).fetchall()
    plan = plan_erasure([RecipientRow(r["id"], r["message_id"], r["copy_id"], r["status"],
                                      r["copy_recipient"] is not None, r["others"]) for r in rows])
    whole, shared, own_copies = plan.whole, plan.shared, plan.own_copies
    events = c.execute(f"SELECT count(*) FROM events WHERE message_id IN ({_marks(whole)})"
                       f" OR copy_id IN ({_marks(own_copies)})", [*whole, *own_copies]).fetchone()[0]
    notifications = c.execute(
        f"DELETE FROM notifications WHERE message_id IN ({_marks(shared)}) AND (lower(recipient) = ?"
        " OR instr(lower(text), ?) > 0)", [*shared, address, address]).rowcount
    notifications += c.execute(f"SELECT count(*) FROM notifications WHERE message_id IN ({_marks(whole)})",
                               whole).fetchone()[0]
    links = _erase_links(c, shared, address)
    for queue_id, position in retired:
        links += c.execute("DELETE FROM retired_links WHERE queue_id = ? AND position = ?",
                           (queue_id, position)).rowcount
    copies = c.execute(f"DELETE FROM copies WHERE id IN ({_marks(own_copies)})", own_copies).rowcount
    recipients = c.execute(f"DELETE FROM recipients WHERE id IN ({_marks(plan.recipient_ids)})",
                           plan.recipient_ids).rowcount
    gone_captured = c.execute(f"DELETE FROM captured WHERE id IN ({_marks(captured)})", captured).rowcount
    messages = _delete_messages(c, whole, with_captured=True)
    gone_deliveries = c.execute(f"DELETE FROM webhook_deliveries WHERE id IN ({_marks(deliveries)})",
                                deliveries).rowcount
    c.execute("DELETE FROM consent WHERE address = ?", (address,))
    c.execute("DELETE FROM do_not_track WHERE entry = ?", (address,))
    if not keep_trackable:
        _insert_record(c, "dnt", PrivacyRecord(erased_entry(address), now, "", "erase"))
    return ErasureCounts(messages=messages, copies=copies, recipients=recipients, events=events, links=links,
                         notifications=notifications, deliveries=gone_deliveries, captured=gone_captured,
                         still_queued=plan.still_queued)


def _erase_links(c: sqlite3.Connection, message_ids: Sequence[int], address: str) -> int:
    """The URLs naming the address in these messages' link lists become gaps; returns how many."""
    erased = 0
    for message_id, text in c.execute(f"SELECT message_id, urls FROM links WHERE message_id IN ({_marks(message_ids)})",
                                      message_ids).fetchall():
        urls, gone = erase_links(from_json(text), address)
        if gone:
            c.execute("UPDATE links SET urls = ? WHERE message_id = ?", (to_json(urls), message_id))
            erased += gone
    return erased


def _subject(c: sqlite3.Connection, address: str) -> SubjectData:
    mails = []
    for r in c.execute(
            "SELECT m.id, m.message_id, m.subject, m.mail_from, m.received_at, m.track_opens, m.track_clicks,"
            " r.status, r.done_at, r.copy_id, cp.recipient AS copy_recipient"
            " FROM recipients r JOIN messages m ON m.id = r.message_id LEFT JOIN copies cp ON cp.id = r.copy_id"
            " WHERE lower(r.address) = ? ORDER BY m.received_at, m.id", (address,)).fetchall():
        events = tuple(SubjectEvent(e["type"], e["at"], e["class"], e["ip"], e["user_agent"], e["url"],
                                    shared=r["copy_recipient"] is None) for e in c.execute(
            "SELECT e.type, e.at, e.class, e.ip, e.user_agent, l.urls ->> e.position AS url FROM events e"
            " LEFT JOIN links l ON l.message_id = e.message_id"
            " WHERE e.copy_id = ? ORDER BY e.at, e.id", (r["copy_id"],)))
        mails.append(SubjectMail(r["id"], r["message_id"], r["subject"], r["mail_from"], r["received_at"],
                                 r["status"], r["done_at"], bool(r["track_opens"]), bool(r["track_clicks"]), events))
    domain = "@" + address.rpartition("@")[2]
    dnt = tuple(_record("dnt", r) for r in c.execute(
        "SELECT * FROM do_not_track WHERE entry IN (?, ?, ?) ORDER BY entry", (address, erased_entry(address), domain)))
    consent = tuple(_record("consent", r) for r in c.execute("SELECT * FROM consent WHERE address = ?", (address,)))
    notes = tuple((n[0], n[1]) for n in c.execute(
        "SELECT at, text FROM notifications WHERE lower(recipient) = ? ORDER BY at, id", (address,)))
    captured = c.execute("SELECT count(*) FROM captured WHERE instr(lower(rcpt_tos), ?) > 0"
                         " OR instr(lower(CAST(data AS TEXT)), ?) > 0", (address, address)).fetchone()[0]
    return SubjectData(address, tuple(mails), dnt, consent, notes, captured)
