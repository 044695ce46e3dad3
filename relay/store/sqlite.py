"""SQLite backend: the embedded default (one file under ./var/, WAL, group commit)."""
from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from relay.control import Choice
from relay.errors import StoreConflict, StoreUnavailable
from relay.policy import PrivacyRules, UserPolicy, privacy_lookups, with_sticky_choice
from relay.records import (
    ApiToken,
    CapturedCopy,
    ClaimedMessage,
    CopyRef,
    CopyTarget,
    MessageOutcome,
    NewMessage,
    PendingRecipient,
    RecipientResult,
    User,
    UserChanges,
)
from relay.status import done_at
from relay.store.queries import user_changes_sql
from relay.store.link_lists import by_position, from_json, to_json, url_list
from relay.store.schema import MIGRATIONS
from relay.store.sqlite_privacy import PrivacyMixin
from relay.store.sqlite_reports import ReportsMixin
from relay.store.sqlite_runner import SqliteRunner, connect
from relay.store.sqlite_transfer import TransferMixin
from relay.store.sqlite_webhooks import WebhooksMixin

log = logging.getLogger(__name__)
T = TypeVar("T")
# an erased body leaves copies of its pages in the WAL (and its old page in the main file)
# until a checkpoint; one runs at most this long after an erase, however quiet the relay is
CHECKPOINT_EVERY = 5.0


class SqliteStore(ReportsMixin, WebhooksMixin, TransferMixin, PrivacyMixin):
    def __init__(self, path: str) -> None:
        self.path = path
        self._runner = SqliteRunner(path)
        self._last_checkpoint = 0.0
        self._erased_since_checkpoint = False
        self._deferred_checkpoint: asyncio.Task | None = None

    @property
    def location(self) -> str:
        return f"sqlite:///{self.path}"

    async def open(self) -> None:
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = connect(self.path)
            _migrate(conn)
        except (OSError, sqlite3.Error) as e:
            raise StoreUnavailable(f"cannot open store {self.location}: {e}") from e
        self._runner.start(conn)

    async def close(self) -> None:
        if self._deferred_checkpoint is not None:
            self._deferred_checkpoint.cancel()
        if self._erased_since_checkpoint:
            await self.checkpoint()
        self._runner.close()

    async def checkpoint(self) -> None:
        """Fold the WAL back and truncate it, so erased bodies leave no copy behind."""
        self._erased_since_checkpoint = False
        self._last_checkpoint = time.monotonic()
        # outside the writer's transaction: checkpoints cannot run inside one
        if not await self._runner.read(_checkpoint):
            self._erased_since_checkpoint = True  # a reader held the old pages: try again later

    async def _checkpoint_due(self) -> None:
        """After an erase: at once if the last checkpoint is old enough, else deferred to then."""
        wait = self._last_checkpoint + CHECKPOINT_EVERY - time.monotonic()
        if wait <= 0:
            await self.checkpoint()
        if self._erased_since_checkpoint and self._deferred_checkpoint is None:
            self._deferred_checkpoint = asyncio.create_task(self._checkpoint_later(max(wait, 0.1)))

    async def _checkpoint_later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        self._deferred_checkpoint = None
        if not self._erased_since_checkpoint:
            return
        try:
            await self._checkpoint_due()
        except Exception:  # the store is failing; close() checkpoints what is left
            log.exception("deferred checkpoint failed")

    # users and credentials

    async def add_user(self, email: str, password_hash: str, is_admin: bool = False) -> User:
        def job(c: sqlite3.Connection) -> User:
            cur = c.execute(
                "INSERT INTO users (email, password_hash, is_admin, created_at) VALUES (?, ?, ?, ?)",
                (email.lower(), password_hash, int(is_admin), time.time()),
            )
            return User(cur.lastrowid, email.lower(), is_admin, password_hash)

        return await self._runner.write(lambda c: _conflicts(job, c))

    async def user_by_email(self, email: str) -> User | None:
        return await self._runner.read_point(
            lambda c: _user(c.execute("SELECT * FROM users WHERE email = ?", (email.lower(),)).fetchone())
        )

    async def users(self) -> list[User]:
        return await self._runner.read(
            lambda c: [_user(r) for r in c.execute("SELECT * FROM users ORDER BY email")]
        )

    async def set_password(self, email: str, password_hash: str) -> bool:
        """A new password also ends the user's panel sessions: whoever knew the old one is out."""
        def change(c: sqlite3.Connection) -> bool:
            changed = c.execute(
                "UPDATE users SET password_hash = ? WHERE email = ?", (password_hash, email.lower())
            ).rowcount == 1
            c.execute("DELETE FROM panel_sessions WHERE user_id IN (SELECT id FROM users WHERE email = ?)",
                      (email.lower(),))
            return changed

        return await self._runner.write(change)

    async def update_user(self, email: str, changes: UserChanges) -> bool:
        """Disabling a user also ends their panel sessions, in the same transaction."""
        sets, args = user_changes_sql(changes, lambda _n: "?")

        def job(c: sqlite3.Connection) -> bool:
            changed = c.execute(f"UPDATE users SET {sets} WHERE email = ?", [*args, email.lower()]).rowcount == 1
            if changes.disabled:
                c.execute("DELETE FROM panel_sessions WHERE user_id IN (SELECT id FROM users WHERE email = ?)",
                          (email.lower(),))
            return changed

        return await self._runner.write(job)

    async def delete_user(self, email: str) -> bool:
        return await self._runner.write(
            lambda c: c.execute("DELETE FROM users WHERE email = ?", (email.lower(),)).rowcount == 1
        )

    async def add_api_token(self, user_id: int, token_hash: str, name: str = "") -> ApiToken:
        now = time.time()
        token_id = await self._runner.write(lambda c: _conflicts(
            lambda c: c.execute(
                "INSERT INTO api_tokens (user_id, token_hash, created_at, name) VALUES (?, ?, ?, ?)",
                (user_id, token_hash, now, name),
            ).lastrowid, c))
        return ApiToken(token_id, name, now, None)

    async def api_tokens(self, user_id: int) -> list[ApiToken]:
        return await self._runner.read(lambda c: [
            ApiToken(r["id"], r["name"], r["created_at"], r["last_used_at"]) for r in c.execute(
                "SELECT id, name, created_at, last_used_at FROM api_tokens WHERE user_id = ? ORDER BY id",
                (user_id,))])

    async def delete_api_token(self, user_id: int, token_id: int) -> bool:
        return await self._runner.write(lambda c: c.execute(
            "DELETE FROM api_tokens WHERE id = ? AND user_id = ?", (token_id, user_id)).rowcount == 1)

    async def touch_api_token(self, token_hash: str, now: float) -> None:
        await self._runner.write(lambda c: c.execute(
            "UPDATE api_tokens SET last_used_at = ? WHERE token_hash = ?", (now, token_hash)))

    async def user_by_api_token(self, token_hash: str) -> User | None:
        return await self._runner.read(
            lambda c: _user(c.execute(
                "SELECT u.* FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = ? AND NOT u.disabled",
                (token_hash,),
            ).fetchone())
        )

    async def policy(self, user_id: int) -> UserPolicy | None:
        return await self._runner.read(lambda c: _policy(c, user_id))

    async def set_policy(self, user_id: int, policy: UserPolicy) -> None:
        await self._runner.write(lambda c: _put_policy(c, user_id, policy))

    async def sending_context(self, user_id: int, addresses: Sequence[str]) -> tuple[UserPolicy | None, PrivacyRules]:
        """What intake needs for one mail, in one read: the user's policy and the privacy rules."""
        return await self._runner.read_point(lambda c: (_policy(c, user_id), _privacy_rules(c, addresses)))

    async def recent_sender_ips(self, user_id: int, since: float) -> frozenset[str]:
        return await self._runner.read(
            lambda c: frozenset(r[0] for r in c.execute(
                "SELECT ip FROM sender_ips WHERE user_id = ? AND last_seen >= ?", (user_id, since)
            ))
        )

    async def note_sender_ip(self, user_id: int, ip: str, now: float) -> None:
        await self._runner.write(lambda c: _note_ip(c, user_id, ip, now))

    # spool and delivery

    async def spool(self, msg: NewMessage) -> int:
        return await self._runner.write(lambda c: _conflicts(_spool, c, msg))

    async def claim(self, worker: str, now: float, limit: int, lease: float) -> list[ClaimedMessage]:
        return await self._runner.write(lambda c: _claim(c, worker, now, limit, lease))

    async def save_links(self, message_id: int, links: Sequence[tuple[int, str]]) -> None:
        # the first save stays: a retry's rewrite must not move what sent mail points at
        await self._runner.write(lambda c: c.execute(
            "INSERT OR IGNORE INTO links (message_id, urls) VALUES (?, ?)", (message_id, to_json(url_list(links)))))

    async def finish(self, message_id: int, results: Sequence[RecipientResult], outcome: MessageOutcome, now: float,
                     rewrite_note: str | None = None, dsn: NewMessage | None = None) -> str:
        def job(c: sqlite3.Connection) -> bool:
            if dsn is not None:  # in the same transaction: a bounce is never lost nor sent twice
                _spool(c, dsn)
            return _finish(c, message_id, results, outcome, now, rewrite_note)

        if await self._runner.write(job):
            self._erased_since_checkpoint = True
            await self._checkpoint_due()
        return outcome.status

    async def lock_holders(self) -> set[str]:
        return await self._runner.read(
            lambda c: {r[0] for r in c.execute("SELECT DISTINCT locked_by FROM messages WHERE locked_by IS NOT NULL")}
        )

    async def renew(self, worker: str, until: float) -> None:
        await self._runner.write(
            lambda c: c.execute("UPDATE messages SET locked_until = ? WHERE locked_by = ?", (until, worker))
        )

    async def release(self, worker: str) -> None:
        await self._runner.write(
            lambda c: c.execute(
                "UPDATE messages SET locked_by = NULL, locked_until = NULL WHERE locked_by = ?", (worker,)
            )
        )

    async def capture(self, message_id: int | None, mail_from: str, rcpt_tos: Sequence[str],
                      data: bytes, now: float) -> None:
        await self._runner.write(
            lambda c: c.execute(
                "INSERT INTO captured (message_id, mail_from, rcpt_tos, data, at) VALUES (?, ?, ?, ?, ?)",
                (message_id, mail_from, json.dumps(list(rcpt_tos)), data, now),
            )
        )

    async def captured(self, message_id: int | None = None) -> list[CapturedCopy]:
        def job(c: sqlite3.Connection) -> list[CapturedCopy]:
            sql = "SELECT * FROM captured"
            args: tuple = ()
            if message_id is not None:
                sql += " WHERE message_id = ?"
                args = (message_id,)
            rows = c.execute(sql + " ORDER BY id", args).fetchall()
            return [CapturedCopy(r["id"], r["message_id"], r["mail_from"], tuple(json.loads(r["rcpt_tos"])),
                             bytes(r["data"]), r["at"]) for r in rows]

        return await self._runner.read(job)

    async def message_row(self, message_id: int) -> dict | None:
        def job(c: sqlite3.Connection) -> dict | None:
            row = c.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None:
                return None
            out = dict(row)
            out["recipients"] = [dict(r) for r in c.execute(
                "SELECT * FROM recipients WHERE message_id = ? ORDER BY id", (message_id,))]
            out["has_body"] = c.execute(
                "SELECT 1 FROM bodies WHERE message_id = ?", (message_id,)).fetchone() is not None
            return out

        return await self._runner.read(job)

    async def queue_counts(self) -> dict[str, int]:
        return await self._runner.read(
            lambda c: {r[0]: r[1] for r in c.execute("SELECT status, COUNT(*) FROM messages GROUP BY status")}
        )

    # hits

    async def copy_target(self, token: str) -> CopyTarget | None:
        return await self._runner.read(lambda c: _copy_target(c, token))

    async def copy_recipients(self, copy_id: int) -> list[str]:
        return await self._runner.read(lambda c: [r[0] for r in c.execute(_COPY_RECIPIENTS, (copy_id,))])


def _migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in sql.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except sqlite3.Error:
            conn.execute("ROLLBACK")
            raise
        log.info("store migrated to version %d", number)


def _conflicts(job: Callable[..., T], c: sqlite3.Connection, *args: Any) -> T:
    """sqlite3's constraint errors become the store's own, as on every engine."""
    try:
        return job(c, *args)
    except sqlite3.IntegrityError as e:
        raise StoreConflict(f"conflicts with the store: {e}") from None


def _checkpoint(c: sqlite3.Connection) -> bool:
    """True if the whole WAL was folded back and truncated."""
    busy, _, _ = c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return busy == 0


def _user(row: sqlite3.Row | None) -> User | None:
    if row is None:
        return None
    return User(row["id"], row["email"], bool(row["is_admin"]), row["password_hash"], bool(row["disabled"]),
                row["language"], row["timezone"])


def _policy(c: sqlite3.Connection, user_id: int) -> UserPolicy | None:
    row = c.execute("SELECT * FROM policies WHERE user_id = ?", (user_id,)).fetchone()
    if row is None:
        return None
    sticky = Choice(**json.loads(row["sticky_choice"])) if row["sticky_choice"] else None
    return UserPolicy(mode=row["mode"], opens=bool(row["opens"]), clicks=bool(row["clicks"]),
                      notify=bool(row["notify"]), sticky=bool(row["sticky"]), sticky_choice=sticky)


def _privacy_rules(c: sqlite3.Connection, addresses: Sequence[str]) -> PrivacyRules:
    keys, lowered = privacy_lookups(addresses)
    marks = ",".join("?" * len(keys)) or "NULL"
    dnt = {r[0] for r in c.execute(f"SELECT entry FROM do_not_track WHERE entry IN ({marks})", keys)}
    marks = ",".join("?" * len(lowered)) or "NULL"
    ok = {r[0] for r in c.execute(f"SELECT address FROM consent WHERE address IN ({marks})", lowered)}
    return PrivacyRules(do_not_track=frozenset(dnt), consented=frozenset(ok))


def _put_policy(c: sqlite3.Connection, user_id: int, p: UserPolicy) -> None:
    sticky = json.dumps(asdict(p.sticky_choice)) if p.sticky_choice else None
    c.execute(
        "INSERT INTO policies (user_id, mode, opens, clicks, notify, sticky, sticky_choice)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET mode = excluded.mode,"
        " opens = excluded.opens, clicks = excluded.clicks, notify = excluded.notify,"
        " sticky = excluded.sticky, sticky_choice = excluded.sticky_choice",
        (user_id, p.mode, int(p.opens), int(p.clicks), int(p.notify), int(p.sticky), sticky),
    )


def _note_ip(c: sqlite3.Connection, user_id: int, ip: str, now: float) -> None:
    c.execute(
        "INSERT INTO sender_ips (user_id, ip, last_seen) VALUES (?, ?, ?)"
        " ON CONFLICT (user_id, ip) DO UPDATE SET last_seen = excluded.last_seen",
        (user_id, ip, now),
    )


def _spool(c: sqlite3.Connection, m: NewMessage) -> int:
    cur = c.execute(
        "INSERT INTO messages (queue_id, user_id, mail_from, message_id, subject, size, received_at,"
        " client_ip, track_opens, track_clicks, is_dsn, next_attempt_at, from_owned)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (m.queue_id, m.user_id, m.mail_from, m.message_id, m.subject, len(m.body), m.received_at,
         m.client_ip, int(m.track_opens), int(m.track_clicks), int(m.is_dsn), m.received_at,
         int(m.from_owned)),
    )
    message_id = cur.lastrowid
    c.execute("INSERT INTO bodies (message_id, data) VALUES (?, ?)", (message_id, m.body))
    copy_ids = []
    for cp in m.copies:
        cur = c.execute(
            "INSERT INTO copies (message_id, token, recipient, opens, clicks, text_links) VALUES (?,?,?,?,?,?)",
            (message_id, cp.token, cp.recipient, int(cp.opens), int(cp.clicks), int(cp.text_links)),
        )
        copy_ids.append(cur.lastrowid)
    c.executemany(
        "INSERT INTO recipients (message_id, address, copy_id) VALUES (?, ?, ?)",
        [(message_id, r.address, None if r.copy_index is None else copy_ids[r.copy_index])
         for r in m.recipients],
    )
    if m.user_id is not None:
        if m.client_ip:
            _note_ip(c, m.user_id, m.client_ip, m.received_at)
        if m.sticky_choice is not None:
            _put_policy(c, m.user_id, with_sticky_choice(_policy(c, m.user_id), m.sticky_choice))
    return message_id


def _claim(c: sqlite3.Connection, worker: str, now: float, limit: int, lease: float) -> list[ClaimedMessage]:
    rows = c.execute(
        "SELECT *, EXISTS (SELECT 1 FROM links l WHERE l.message_id = messages.id) AS links_saved"
        " FROM messages WHERE status IN ('queued', 'deferred') AND next_attempt_at <= ?"
        " AND (locked_until IS NULL OR locked_until < ?) ORDER BY next_attempt_at LIMIT ?",
        (now, now, limit),
    ).fetchall()
    claimed = []
    for row in rows:
        c.execute("UPDATE messages SET locked_by = ?, locked_until = ? WHERE id = ?",
                  (worker, now + lease, row["id"]))
        body = c.execute("SELECT data FROM bodies WHERE message_id = ?", (row["id"],)).fetchone()
        recipients = tuple(
            PendingRecipient(
                r["id"], r["address"], r["attempts"],
                None if r["copy_id"] is None else CopyRef(
                    r["copy_id"], r["token"], r["crecipient"], bool(r["opens"]), bool(r["clicks"]),
                    bool(r["text_links"])),
            )
            for r in c.execute(
                "SELECT r.*, k.token, k.recipient AS crecipient, k.opens, k.clicks, k.text_links"
                " FROM recipients r LEFT JOIN copies k ON k.id = r.copy_id"
                " WHERE r.message_id = ? AND r.status IN ('queued', 'deferred') ORDER BY r.id",
                (row["id"],),
            )
        )
        if body is None:  # cannot happen while recipients are pending; never deliver nothing
            log.error("message %s has pending recipients but no body", row["queue_id"])
            continue
        settled = tuple(r[0] for r in c.execute(
            "SELECT status FROM recipients WHERE message_id = ? AND status NOT IN ('queued', 'deferred') ORDER BY id",
            (row["id"],)))
        claimed.append(ClaimedMessage(row["id"], row["queue_id"], row["user_id"], row["mail_from"],
                                      row["received_at"], bytes(body[0]), recipients,
                                      bool(row["links_saved"]), bool(row["from_owned"]), settled=settled))
    return claimed


def _finish(c: sqlite3.Connection, message_id: int, results: Sequence[RecipientResult], outcome: MessageOutcome,
            now: float, rewrite_note: str | None) -> bool:
    """Whether the message's body was erased. A recipient row gone meanwhile is just not updated:
    a privacy erasure may delete the settled recipients of a queued mail (relay/privacy.py
    plan_erasure), and the outcome counts them as claimed."""
    for r in results:
        c.execute(
            "UPDATE recipients SET status = ?, attempts = attempts + 1, detail = ?, done_at = ? WHERE id = ?",
            (r.status, r.detail, done_at(r.status, now), r.recipient_id),
        )
        if r.status == "sent":
            c.execute(
                "UPDATE copies SET delivered_at = COALESCE(delivered_at, ?) WHERE id ="
                " (SELECT copy_id FROM recipients WHERE id = ?)", (now, r.recipient_id))
    c.execute(
        "UPDATE messages SET status = ?, next_attempt_at = ?, locked_by = NULL, locked_until = NULL,"
        " sent_at = CASE WHEN ? THEN COALESCE(sent_at, ?) ELSE sent_at END,"
        " rewrite_note = COALESCE(?, rewrite_note) WHERE id = ?",
        (outcome.status, outcome.next_attempt_at, outcome.sent, now, rewrite_note, message_id),
    )
    return outcome.erase_body and c.execute("DELETE FROM bodies WHERE message_id = ?", (message_id,)).rowcount > 0


# through the message, whose recipients are indexed (copy_id is not)
_COPY_RECIPIENTS = ("SELECT r.address FROM copies k JOIN recipients r ON r.message_id = k.message_id"
                    " WHERE k.id = ? AND r.copy_id = k.id ORDER BY r.id")


def _copy_target(c: sqlite3.Connection, token: str) -> CopyTarget | None:
    row = c.execute(
        "SELECT k.id, k.message_id, k.recipient, k.delivered_at, m.user_id, l.urls FROM copies k"
        " JOIN messages m ON m.id = k.message_id LEFT JOIN links l ON l.message_id = k.message_id"
        " WHERE k.token = ?", (token,)
    ).fetchone()
    if row is None:
        return None
    return CopyTarget(row["id"], row["message_id"], row["user_id"], row["recipient"],
                      row["delivered_at"], by_position(from_json(row["urls"])))
