"""PostgreSQL queries behind the privacy lifecycle (the twin of sqlite_privacy.py): the lists
with their records, the retention purge, erasure and access."""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, AsyncContextManager, Sequence

import asyncpg

from relay.policy import erased_entry
from relay.privacy import RecipientRow, erase_links, plan_erasure
from relay.records import ErasureCounts, PrivacyRecord, PurgeCounts, SubjectData, SubjectEvent, SubjectMail
from relay.store.queries import PENDING_SQL, purgeable_sql
from relay.store.tables import PRIVACY_TABLES
from relay.store.pg_rows import affected

_PURGEABLE = purgeable_sql("$1")
# an erasure's deleted rows stay in their pages until VACUUM marks them free
_ERASED_TABLES = ("recipients", "copies", "events", "links", "retired_links", "notifications",
                  "webhook_deliveries", "captured", "consent", "do_not_track", "messages")
# free text that may name an address: captured messages are bytes (escape keeps ASCII as is)
_CAPTURED_MENTION = "(strpos(lower(rcpt_tos), $1) > 0 OR strpos(lower(encode(data, 'escape')), $1) > 0)"


class PgPrivacyMixin:
    """Mixed into PostgresStore."""

    if TYPE_CHECKING:
        def _conn(self, *, transaction: bool = False) -> AsyncContextManager[asyncpg.Connection]: ...

    async def privacy_list(self, kind: str) -> list[str]:
        return [r.entry for r in await self.privacy_records(kind)]

    async def privacy_records(self, kind: str) -> list[PrivacyRecord]:
        table, column = PRIVACY_TABLES[kind]
        async with self._conn() as c:
            return [_record(kind, r) for r in await c.fetch(f"SELECT * FROM {table} ORDER BY {column}")]

    async def privacy_add(self, kind: str, entry: str, *, source: str = "cli", recorded_by: str = "",
                          at: float | None = None, given_at: float | None = None) -> bool:
        record = PrivacyRecord(entry, time.time() if at is None else at, recorded_by, source, given_at)
        return await self.privacy_add_many(kind, [record]) == 1

    async def privacy_add_many(self, kind: str, records: Sequence[PrivacyRecord]) -> int:
        """Adds the entries not listed yet (an entry listed keeps its first record); returns how many."""
        async with self._conn(transaction=True) as c:
            return sum([await _insert_record(c, kind, r) for r in records])

    async def privacy_del(self, kind: str, entry: str) -> bool:
        table, column = PRIVACY_TABLES[kind]
        async with self._conn() as c:
            return affected(await c.execute(f"DELETE FROM {table} WHERE {column} = $1", entry.lower())) == 1

    # retention

    async def purge(self, cutoff: float, limit: int) -> PurgeCounts:
        """One bounded batch of what is older than cutoff; the caller repeats until nothing is left."""
        async with self._conn(transaction=True) as c:
            events = affected(await c.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < $1 ORDER BY at LIMIT $2)",
                cutoff, limit))
            notifications = affected(await c.execute(
                "DELETE FROM notifications WHERE id IN (SELECT n.id FROM users u"
                " JOIN notifications n ON n.user_id = u.id AND n.at < $1 LIMIT $2)", cutoff, limit))
            ids = [r[0] for r in await c.fetch(
                f"SELECT m.id FROM messages m WHERE {_PURGEABLE} ORDER BY m.received_at LIMIT $2", cutoff, limit)]
            await _retire_links(c, ids)
            messages = await _delete_messages(c, ids, with_captured=False)
            captured = affected(await c.execute(
                "DELETE FROM captured WHERE id IN (SELECT id FROM captured WHERE at < $1 LIMIT $2)", cutoff, limit))
            deliveries = affected(await c.execute(
                "DELETE FROM webhook_deliveries WHERE id IN (SELECT d.id FROM webhooks w JOIN webhook_deliveries d"
                " ON d.webhook_id = w.id AND d.created_at < $1 WHERE d.status != 'queued' LIMIT $2)", cutoff, limit))
        return PurgeCounts(events, messages, notifications, captured, deliveries)

    async def purge_preview(self, cutoff: float) -> PurgeCounts:
        async with self._conn() as c:
            row = await c.fetchrow(
                "SELECT (SELECT count(*) FROM events WHERE at < $1),"
                f" (SELECT count(*) FROM messages m WHERE {_PURGEABLE}),"
                " (SELECT count(*) FROM notifications WHERE at < $1),"
                " (SELECT count(*) FROM captured WHERE at < $1),"
                " (SELECT count(*) FROM webhook_deliveries WHERE created_at < $1 AND status != 'queued')", cutoff)
        return PurgeCounts(*row)

    async def retired_link(self, token: str, position: int) -> str | None:
        async with self._conn() as c:
            return await c.fetchval(
                "SELECT l.url FROM retired_tokens t JOIN retired_links l ON l.queue_id = t.queue_id"
                " WHERE t.token = $1 AND l.position = $2", token, position)

    # access and erasure

    async def subject(self, address: str) -> SubjectData:
        address = address.lower()
        async with self._conn(transaction=True) as c:  # one snapshot
            mails = []
            for r in await c.fetch(
                    "SELECT m.id, m.message_id, m.subject, m.mail_from, m.received_at, m.track_opens, m.track_clicks,"
                    " r.status, r.done_at, r.copy_id, cp.recipient AS copy_recipient FROM recipients r"
                    " JOIN messages m ON m.id = r.message_id LEFT JOIN copies cp ON cp.id = r.copy_id"
                    " WHERE lower(r.address) = $1 ORDER BY m.received_at, m.id", address):
                events = tuple(SubjectEvent(e["type"], e["at"], e["class"], e["ip"], e["user_agent"], e["url"],
                                            shared=r["copy_recipient"] is None) for e in await c.fetch(
                    "SELECT e.type, e.at, e.class, e.ip, e.user_agent, l.urls[e.position + 1] AS url FROM events e"
                    " LEFT JOIN links l ON l.message_id = e.message_id"
                    " WHERE e.copy_id = $1 ORDER BY e.at, e.id", r["copy_id"]))
                mails.append(SubjectMail(r["id"], r["message_id"], r["subject"], r["mail_from"], r["received_at"],
                                         r["status"], r["done_at"], r["track_opens"], r["track_clicks"], events))
            domain = "@" + address.rpartition("@")[2]
            dnt = tuple(_record("dnt", r) for r in await c.fetch(
                "SELECT * FROM do_not_track WHERE entry = ANY($1::text[]) ORDER BY entry",
                [address, erased_entry(address), domain]))
            consent = tuple(_record("consent", r) for r in await c.fetch(
                "SELECT * FROM consent WHERE address = $1", address))
            notes = tuple((n[0], n[1]) for n in await c.fetch(
                "SELECT at, text FROM notifications WHERE lower(recipient) = $1 ORDER BY at, id", address))
            captured = await c.fetchval(f"SELECT count(*) FROM captured WHERE {_CAPTURED_MENTION}", address)
        return SubjectData(address, tuple(mails), dnt, consent, notes, captured)

    async def erase_subject(self, address: str, *, keep_trackable: bool, now: float) -> ErasureCounts:
        """Everything about the address, in one transaction, then VACUUM of the tables it touched."""
        address = address.lower()
        async with self._conn(transaction=True) as c:
            counts = await _erase(c, address, keep_trackable, now)
        await self._vacuum(_ERASED_TABLES)
        return counts

    async def erase_user_mail(self, user_id: int, limit: int) -> int:
        """A batch of a user's mail that is no longer queued, with the capture upstream's
        copies of it; returns how many messages went (0: all that can go is gone)."""
        async with self._conn(transaction=True) as c:
            ids = [r[0] for r in await c.fetch(
                f"SELECT id FROM messages WHERE user_id = $1 AND status NOT IN {PENDING_SQL} LIMIT $2", user_id, limit)]
            gone = await _delete_messages(c, ids, with_captured=True)
        if not gone:
            await self._vacuum(_ERASED_TABLES)
        return gone

    async def _vacuum(self, tables: Sequence[str]) -> None:
        async with self._conn() as c:  # VACUUM cannot run in a transaction
            await c.execute(f"VACUUM {', '.join(tables)}")


def _record(kind: str, row: asyncpg.Record) -> PrivacyRecord:
    return PrivacyRecord(row[PRIVACY_TABLES[kind][1]], row["created_at"], row["recorded_by"], row["source"],
                         row["given_at"] if kind == "consent" else None)


async def _insert_record(c: asyncpg.Connection, kind: str, r: PrivacyRecord) -> int:
    if kind == "consent":
        return affected(await c.execute(
            "INSERT INTO consent (address, created_at, recorded_by, source, given_at) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT DO NOTHING", r.entry.lower(), r.recorded_at, r.recorded_by, r.source, r.given_at))
    return affected(await c.execute(
        "INSERT INTO do_not_track (entry, created_at, recorded_by, source) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT DO NOTHING", r.entry.lower(), r.recorded_at, r.recorded_by, r.source))


async def _retire_links(c: asyncpg.Connection, message_ids: Sequence[int]) -> None:
    """Links in purged mail keep redirecting: the URLs by the message's queue id, its copies' tokens to it."""
    if not message_ids:
        return
    # a link list's element i is position i (arrays count from 1); NULL elements are gaps
    await c.execute("INSERT INTO retired_links (queue_id, position, url) SELECT m.queue_id, u.n - 1, u.url"
                    " FROM links l JOIN messages m ON m.id = l.message_id, unnest(l.urls) WITH ORDINALITY u(url, n)"
                    " WHERE l.message_id = ANY($1::bigint[]) AND u.url IS NOT NULL ON CONFLICT DO NOTHING",
                    message_ids)
    await c.execute("INSERT INTO retired_tokens (token, queue_id) SELECT c.token, m.queue_id"
                    " FROM copies c JOIN messages m ON m.id = c.message_id WHERE c.message_id = ANY($1::bigint[])"
                    " AND EXISTS (SELECT 1 FROM retired_links r WHERE r.queue_id = m.queue_id) ON CONFLICT DO NOTHING",
                    message_ids)


async def _delete_messages(c: asyncpg.Connection, ids: Sequence[int], *, with_captured: bool) -> int:
    """The messages and all that hangs on them (the schema cascades)."""
    if not ids:
        return 0
    if with_captured:
        await c.execute("DELETE FROM captured WHERE message_id = ANY($1::bigint[])", ids)
    return affected(await c.execute("DELETE FROM messages WHERE id = ANY($1::bigint[])", ids))


async def _erase_links(c: asyncpg.Connection, message_ids: Sequence[int], address: str) -> int:
    """The URLs naming the address in these messages' link lists become gaps; returns how many."""
    erased = 0
    for message_id, urls in await c.fetch("SELECT message_id, urls FROM links WHERE message_id = ANY($1::bigint[])"
                                          " FOR UPDATE", message_ids):
        kept, gone = erase_links(urls, address)
        if gone:
            await c.execute("UPDATE links SET urls = $1 WHERE message_id = $2", kept, message_id)
            erased += gone
    return erased


async def _erase(c: asyncpg.Connection, address: str, keep_trackable: bool, now: float) -> ErasureCounts:
    rows = await c.fetch(
        "SELECT r.id, r.message_id, r.copy_id, r.status, cp.recipient AS copy_recipient,"
        " (SELECT count(*) FROM recipients o WHERE o.message_id = r.message_id AND lower(o.address) != $1) AS others"
        " FROM recipients r LEFT JOIN copies cp ON cp.id = r.copy_id WHERE lower(r.address) = $1", address)
    plan = plan_erasure([RecipientRow(r["id"], r["message_id"], r["copy_id"], r["status"],
                                      r["copy_recipient"] is not None, r["others"]) for r in rows])
    whole, shared, own_copies = plan.whole, plan.shared, plan.own_copies
    events = await c.fetchval("SELECT count(*) FROM events WHERE message_id = ANY($1::bigint[])"
                              " OR copy_id = ANY($2::bigint[])", whole, own_copies)
    notifications = affected(await c.execute(
        "DELETE FROM notifications WHERE message_id = ANY($1::bigint[]) AND (lower(recipient) = $2"
        " OR strpos(lower(text), $2) > 0)", shared, address))
    notifications += await c.fetchval("SELECT count(*) FROM notifications WHERE message_id = ANY($1::bigint[])", whole)
    links = await _erase_links(c, shared, address)
    links += affected(await c.execute("DELETE FROM retired_links WHERE strpos(lower(url), $1) > 0", address))
    copies = affected(await c.execute("DELETE FROM copies WHERE id = ANY($1::bigint[])", own_copies))
    recipients = affected(await c.execute("DELETE FROM recipients WHERE id = ANY($1::bigint[])",
                                          plan.recipient_ids))
    captured = affected(await c.execute(f"DELETE FROM captured WHERE {_CAPTURED_MENTION}", address))
    messages = await _delete_messages(c, whole, with_captured=True)
    deliveries = affected(await c.execute(
        "DELETE FROM webhook_deliveries WHERE strpos(lower(payload), $1) > 0 OR strpos(lower(payload), $2) > 0",
        address, json.dumps(address)[1:-1]))
    await c.execute("DELETE FROM consent WHERE address = $1", address)
    await c.execute("DELETE FROM do_not_track WHERE entry = $1", address)
    if not keep_trackable:
        await _insert_record(c, "dnt", PrivacyRecord(erased_entry(address), now, "", "erase"))
    return ErasureCounts(messages=messages, copies=copies, recipients=recipients, events=events, links=links,
                         notifications=notifications, deliveries=deliveries, captured=captured,
                         still_queued=plan.still_queued)
