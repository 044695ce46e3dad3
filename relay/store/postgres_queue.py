"""The spool and the delivery queue's SQL for PostgresStore (postgres.py): a round trip or two
per call, because each one costs the relay and the server more CPU than the rows themselves
(bench/README.md, "PostgreSQL beside SQLite"). Arrays carry a mail's copies and recipients."""
from __future__ import annotations

import logging
from typing import Sequence

import asyncpg

from relay.records import ClaimedMessage, CopyRef, MessageOutcome, NewMessage, PendingRecipient, RecipientResult
from relay.status import done_at

log = logging.getLogger(__name__)

# One statement, one round trip, for a mail's rows. A recipient names its copy by token (unique),
# the copy's id being known only inside the statement.
_SPOOL = """
WITH m AS (
    INSERT INTO messages (queue_id, user_id, mail_from, message_id, subject, size, received_at, client_ip,
                          track_opens, track_clicks, is_dsn, next_attempt_at, from_owned)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $7, $12) RETURNING id),
b AS (INSERT INTO bodies (message_id, data) SELECT id, $13 FROM m),
k AS (
    INSERT INTO copies (message_id, token, recipient, opens, clicks, text_links)
    SELECT m.id, t.token, t.recipient, t.opens, t.clicks, t.text_links
    FROM m, unnest($14::text[], $15::text[], $16::boolean[], $17::boolean[], $18::boolean[])
        AS t(token, recipient, opens, clicks, text_links)
    RETURNING id, token),
r AS (
    INSERT INTO recipients (message_id, address, copy_id)
    SELECT m.id, x.address, k.id
    FROM m CROSS JOIN unnest($19::text[], $20::text[]) WITH ORDINALITY AS x(address, token, n)
    LEFT JOIN k ON k.token = x.token ORDER BY x.n),
ip AS (
    INSERT INTO sender_ips (user_id, ip, last_seen)
    SELECT $2, $8, $7 WHERE $2::bigint IS NOT NULL AND $8::text <> '' AND NOT EXISTS (
        SELECT 1 FROM sender_ips WHERE user_id = $2 AND ip = $8 AND last_seen >= $7::float8 - $21::float8)
    ON CONFLICT (user_id, ip) DO UPDATE SET last_seen = GREATEST(sender_ips.last_seen, excluded.last_seen))
SELECT id FROM m
"""
# Every mail of a sender would update the same sender_ips row, and that row's lock is held
# until COMMIT: sessions of one sender would spool one after the other, one disk sync each.
# A row seen this recently is left alone (it serves a 30-day window: hit_tracker.py).
SENDER_IP_FRESH = 3600.0


def _spool_args(m: NewMessage) -> tuple:
    """The parameters of _SPOOL: the message's columns, then its copies and recipients as arrays."""
    tokens = [cp.token for cp in m.copies]
    return (m.queue_id, m.user_id, m.mail_from, m.message_id, m.subject, len(m.body), m.received_at,
            m.client_ip, m.track_opens, m.track_clicks, m.is_dsn, m.from_owned, m.body,
            tokens, [cp.recipient for cp in m.copies], [cp.opens for cp in m.copies],
            [cp.clicks for cp in m.copies], [cp.text_links for cp in m.copies],
            [r.address for r in m.recipients],
            [None if r.copy_index is None else tokens[r.copy_index] for r in m.recipients],
            SENDER_IP_FRESH)


async def insert_message(c: asyncpg.Connection, m: NewMessage) -> int:
    """The mail's rows, in one statement (its own transaction unless c is in one)."""
    return await c.fetchval(_SPOOL, *_spool_args(m))


# SKIP LOCKED: workers claiming at the same moment take different mail instead of waiting
_CLAIM = """
WITH due AS (
    SELECT id FROM messages WHERE status IN ('queued', 'deferred') AND next_attempt_at <= $1
    AND (locked_until IS NULL OR locked_until < $1) ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED),
m AS (UPDATE messages m SET locked_by = $3, locked_until = $4 FROM due WHERE m.id = due.id RETURNING m.*)
SELECT m.*, EXISTS (SELECT 1 FROM links l WHERE l.message_id = m.id) AS links_saved, b.data AS body, ARRAY(
    SELECT (r.id, r.address, r.attempts, r.copy_id, k.token, k.recipient, k.opens, k.clicks, k.text_links)
    FROM recipients r LEFT JOIN copies k ON k.id = r.copy_id
    WHERE r.message_id = m.id AND r.status IN ('queued', 'deferred') ORDER BY r.id) AS pending, ARRAY(
    SELECT r.status FROM recipients r
    WHERE r.message_id = m.id AND r.status NOT IN ('queued', 'deferred') ORDER BY r.id) AS settled
FROM m LEFT JOIN bodies b ON b.message_id = m.id
ORDER BY m.next_attempt_at, m.id
"""


def _claimed(row: asyncpg.Record) -> ClaimedMessage | None:
    """A row of _CLAIM; its pending recipients come as (id, address, attempts, copy columns...),
    the others as their statuses (for relay/status.py message_outcome)."""
    if row["body"] is None:  # cannot happen while recipients are pending; never deliver nothing
        log.error("message %s has pending recipients but no body", row["queue_id"])
        return None
    pending = tuple(
        PendingRecipient(rid, address, attempts,
                         None if copy_id is None else CopyRef(copy_id, token, recipient, opens, clicks, text_links))
        for rid, address, attempts, copy_id, token, recipient, opens, clicks, text_links in row["pending"])
    return ClaimedMessage(row["id"], row["queue_id"], row["user_id"], row["mail_from"], row["received_at"],
                          bytes(row["body"]), pending, row["links_saved"], row["from_owned"],
                          settled=tuple(row["settled"]))


# The attempt's results on their recipients (and on the copies sent) and its outcome on the
# message, whose body goes once no recipient waits: one statement, one round trip. A recipient
# row gone meanwhile is just not updated: a privacy erasure may delete the settled recipients of
# a queued mail (relay/privacy.py plan_erasure), and the outcome counts them as claimed.
# "r.message_id = $1" also lets PostgreSQL keep one plan for it: without it, its cost guess for
# a parameter array (ten rows) made it plan the statement anew on every call.
_FINISH = """
WITH res AS (SELECT * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::float8[]) AS t(id, status, detail, done_at)),
upd AS (
    UPDATE recipients r SET status = res.status, attempts = r.attempts + 1, detail = res.detail, done_at = res.done_at
    FROM res WHERE r.message_id = $1 AND r.id = res.id RETURNING r.status, r.copy_id),
sent AS (
    UPDATE copies SET delivered_at = COALESCE(delivered_at, $6)
    WHERE id IN (SELECT copy_id FROM upd WHERE status = 'sent')),
m AS (
    UPDATE messages SET status = $7, next_attempt_at = $8, locked_by = NULL, locked_until = NULL,
        sent_at = CASE WHEN $9::boolean THEN COALESCE(sent_at, $6) ELSE sent_at END,
        rewrite_note = COALESCE($10, rewrite_note) WHERE id = $1),
gone AS (DELETE FROM bodies WHERE message_id = $1 AND $11::boolean RETURNING 1)
SELECT count(*) FROM gone
"""


async def claim_messages(c: asyncpg.Connection, worker: str, now: float, limit: int,
                         lease: float) -> list[ClaimedMessage]:
    # one statement: a busy delivery role claims about once per finished mail
    rows = await c.fetch(_CLAIM, now, limit, worker, now + lease)
    return [m for m in map(_claimed, rows) if m is not None]


async def finish_message(c: asyncpg.Connection, message_id: int, results: Sequence[RecipientResult],
                         outcome: MessageOutcome, now: float, rewrite_note: str | None) -> bool:
    """Whether the message's body was erased."""
    return await c.fetchval(
        _FINISH, message_id, [r.recipient_id for r in results], [r.status for r in results],
        [r.detail for r in results], [done_at(r.status, now) for r in results], now,
        outcome.status, outcome.next_attempt_at, outcome.sent, rewrite_note, outcome.erase_body) > 0
