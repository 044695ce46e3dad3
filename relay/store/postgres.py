"""PostgreSQL backend (asyncpg, a connection pool): one store for several hosts.

The same contract as sqlite.py: dataclasses in and out, product rules from the pure
modules, asyncpg's errors turned into the store's own (relay/errors.py). Delivery workers
on any host claim due mail with ``FOR UPDATE SKIP LOCKED`` and a lease (``locked_by``,
``locked_until``). Migrations run at start under an advisory lock, so nodes may start together.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any, AsyncIterator, Sequence

import asyncpg

from relay.control import Choice
from relay.errors import StoreConflict, StoreUnavailable
from relay.policy import PrivacyRules, UserPolicy, privacy_lookups, with_sticky_choice
from relay.records import (
    ApiToken,
    CapturedCopy,
    ClaimedMessage,
    CopyTarget,
    MessageOutcome,
    NewMessage,
    RecipientResult,
    User,
    UserChanges,
)
from relay.store.queries import user_changes_sql
from relay.store.link_lists import by_position, url_list
from relay.store.pg_rows import affected
from relay.store.pg_schema import MIGRATIONS
from relay.store.postgres_privacy import PgPrivacyMixin
from relay.store.postgres_queue import claim_messages, finish_message, insert_message
from relay.store.postgres_reports import PgReportsMixin
from relay.store.postgres_transfer import PgTransferMixin
from relay.store.postgres_webhooks import PgWebhooksMixin

log = logging.getLogger(__name__)
# any constant of our own: every node migrating the same database takes the same lock
MIGRATION_LOCK = 0x7472_6163_6B72
CONNECT_TIMEOUT = 10.0
# Per process. More connections than busy statements only add server processes that take
# turns on the same cores: on 2 cores, 4 instead of 10 cut PostgreSQL's CPU per mail by a
# fifth (bench/README.md, "PostgreSQL beside SQLite"). Over a slow network more may pay.
DEFAULT_CONNECTIONS = 4
# an erased body stays in the table's pages until the table is rewritten (checkpoint())
VACUUM_EVERY = 5.0
# a bigger queue would hold the lock for seconds: it is rewritten once it has shrunk
FULL_REWRITE_MAX = 64 << 20
ERASE_LOCK_WAIT = "200ms"  # the wait stalls intake behind it, so keep it short


def public_address(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    scheme, sep, rest = dsn.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return dsn
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}@{host}" if user else f"{scheme}{sep}{host}"


class PostgresStore(PgReportsMixin, PgWebhooksMixin, PgTransferMixin, PgPrivacyMixin):
    def __init__(self, dsn: str, *, min_connections: int = 1, max_connections: int = DEFAULT_CONNECTIONS) -> None:
        self.dsn = dsn
        self._sizes = (min_connections, max_connections)
        self._pool: asyncpg.Pool | None = None
        self._last_vacuum = 0.0
        self._erased_since_vacuum = False
        self.full_rewrite_max = FULL_REWRITE_MAX

    @property
    def location(self) -> str:
        return public_address(self.dsn)

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=self._sizes[0], max_size=self._sizes[1],
                                                   timeout=CONNECT_TIMEOUT, init=_start_session,
                                                   reset=_keep_session)
            async with self._pool.acquire() as c:
                await _migrate(c)
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            if self._pool is not None:
                self._pool.terminate()
                self._pool = None
            raise StoreUnavailable(f"cannot open store {self.location}: {_reason(e)}") from None

    async def close(self) -> None:
        if self._pool is None:
            return
        if self._erased_since_vacuum:
            await self.checkpoint()
        try:
            await asyncio.wait_for(self._pool.close(), 10)
        except (asyncio.TimeoutError, asyncpg.InterfaceError):
            self._pool.terminate()
        self._pool = None

    async def checkpoint(self) -> None:
        """Rewrite the bodies table (and its TOAST table) without the erased bodies' bytes.

        A deleted row stays in its page, and plain VACUUM only marks the space free: the
        bytes stay until a new row happens to cover them (tests/store/test_store.py found
        them there). VACUUM FULL copies the live rows (the mail still queued, usually few)
        into new files and removes the old ones. It locks the table meanwhile, so it waits
        at most ERASE_LOCK_WAIT for the lock, and a queue above full_rewrite_max bytes (a
        backlog after an outage) only gets a plain VACUUM until it has shrunk."""
        self._last_vacuum = time.monotonic()
        try:
            # a connection of its own: pooled ones are handed on without a reset (_keep_session)
            async with self._errors():
                c = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT,
                                          server_settings={"lock_timeout": ERASE_LOCK_WAIT})
                try:
                    if await c.fetchval("SELECT pg_total_relation_size('bodies')") > self.full_rewrite_max:
                        await c.execute("VACUUM bodies")
                        return
                    await c.execute("VACUUM FULL bodies")
                finally:
                    await c.close(timeout=CONNECT_TIMEOUT)
        except StoreUnavailable as e:
            log.warning("erased bodies not yet rewritten away, trying again later: %s", e)
            return
        self._erased_since_vacuum = False

    @property
    def erasure_pending(self) -> bool:
        """Bodies were deleted whose bytes may still be in the table's pages."""
        return self._erased_since_vacuum

    @asynccontextmanager
    async def _conn(self, *, transaction: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection (in a transaction if asked); driver errors become the store's."""
        if self._pool is None:
            raise StoreUnavailable(f"store {self.location} is not open")
        async with self._errors():
            async with self._pool.acquire(timeout=CONNECT_TIMEOUT) as c:
                if transaction:
                    async with c.transaction():
                        yield c
                else:
                    yield c

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        """Driver errors become the store's."""
        try:
            yield
        except asyncpg.IntegrityConstraintViolationError as e:
            raise StoreConflict(f"conflicts with the store: {e.detail or e}") from None
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            raise StoreUnavailable(f"store {self.location} unavailable: {_reason(e)}") from None

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self._conn() as c:
            return await c.fetch(sql, *args)

    async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self._conn() as c:
            return await c.fetchrow(sql, *args)

    async def _execute(self, sql: str, *args: Any) -> str:
        async with self._conn() as c:
            return await c.execute(sql, *args)

    # users and credentials

    async def add_user(self, email: str, password_hash: str, is_admin: bool = False) -> User:
        row = await self._fetchrow(
            "INSERT INTO users (email, password_hash, is_admin, created_at) VALUES ($1, $2, $3, $4) RETURNING *",
            email.lower(), password_hash, is_admin, time.time())
        return _user(row)

    async def user_by_email(self, email: str) -> User | None:
        return _user(await self._fetchrow("SELECT * FROM users WHERE email = $1", email.lower()))

    async def users(self) -> list[User]:
        return [_user(r) for r in await self._fetch("SELECT * FROM users ORDER BY email")]

    async def set_password(self, email: str, password_hash: str) -> bool:
        """A new password also ends the user's panel sessions: whoever knew the old one is out."""
        async with self._conn(transaction=True) as c:
            changed = affected(await c.execute("UPDATE users SET password_hash = $1 WHERE email = $2",
                                             password_hash, email.lower())) == 1
            await c.execute("DELETE FROM panel_sessions WHERE user_id IN (SELECT id FROM users WHERE email = $1)",
                            email.lower())
        return changed

    async def update_user(self, email: str, changes: UserChanges) -> bool:
        """Disabling a user also ends their panel sessions, in the same transaction."""
        sets, args = user_changes_sql(changes, lambda n: f"${n}")
        async with self._conn(transaction=True) as c:
            changed = affected(await c.execute(f"UPDATE users SET {sets} WHERE email = ${len(args) + 1}",
                                               *args, email.lower())) == 1
            if changes.disabled:
                await c.execute("DELETE FROM panel_sessions WHERE user_id IN (SELECT id FROM users WHERE email = $1)",
                                email.lower())
        return changed

    async def delete_user(self, email: str) -> bool:
        return affected(await self._execute("DELETE FROM users WHERE email = $1", email.lower())) == 1

    async def add_api_token(self, user_id: int, token_hash: str, name: str = "") -> ApiToken:
        now = time.time()
        async with self._conn() as c:
            token_id = await c.fetchval(
                "INSERT INTO api_tokens (user_id, token_hash, created_at, name) VALUES ($1, $2, $3, $4)"
                " RETURNING id", user_id, token_hash, now, name)
        return ApiToken(token_id, name, now, None)

    async def api_tokens(self, user_id: int) -> list[ApiToken]:
        return [ApiToken(r["id"], r["name"], r["created_at"], r["last_used_at"]) for r in await self._fetch(
            "SELECT id, name, created_at, last_used_at FROM api_tokens WHERE user_id = $1 ORDER BY id", user_id)]

    async def delete_api_token(self, user_id: int, token_id: int) -> bool:
        return affected(await self._execute(
            "DELETE FROM api_tokens WHERE id = $1 AND user_id = $2", token_id, user_id)) == 1

    async def touch_api_token(self, token_hash: str, now: float) -> None:
        await self._execute("UPDATE api_tokens SET last_used_at = $1 WHERE token_hash = $2", now, token_hash)

    async def user_by_api_token(self, token_hash: str) -> User | None:
        return _user(await self._fetchrow(
            "SELECT u.* FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1 AND NOT u.disabled",
            token_hash))

    async def policy(self, user_id: int) -> UserPolicy | None:
        async with self._conn() as c:
            return await _policy(c, user_id)

    async def set_policy(self, user_id: int, policy: UserPolicy) -> None:
        async with self._conn() as c:
            await _put_policy(c, user_id, policy)

    async def sending_context(self, user_id: int, addresses: Sequence[str]) -> tuple[UserPolicy | None, PrivacyRules]:
        """What intake needs for one mail: the user's policy and the privacy rules."""
        keys, lowered = privacy_lookups(addresses)
        row = await self._fetchrow(  # one round trip per mail
            "SELECT p.*, ARRAY(SELECT entry FROM do_not_track WHERE entry = ANY($2::text[])) AS dnt,"
            " ARRAY(SELECT address FROM consent WHERE address = ANY($3::text[])) AS consented"
            " FROM (SELECT $1::bigint AS id) u LEFT JOIN policies p ON p.user_id = u.id", user_id, keys, lowered)
        return _policy_of(row), PrivacyRules(do_not_track=frozenset(row["dnt"]), consented=frozenset(row["consented"]))

    async def recent_sender_ips(self, user_id: int, since: float) -> frozenset[str]:
        return frozenset(r[0] for r in await self._fetch(
            "SELECT ip FROM sender_ips WHERE user_id = $1 AND last_seen >= $2", user_id, since))

    async def note_sender_ip(self, user_id: int, ip: str, now: float) -> None:
        async with self._conn() as c:
            await _note_ip(c, user_id, ip, now)

    # spool and delivery

    async def spool(self, msg: NewMessage) -> int:
        # one statement is its own transaction; a new sticky choice is a second one
        async with self._conn(transaction=msg.sticky_choice is not None) as c:
            return await _spool(c, msg)

    async def claim(self, worker: str, now: float, limit: int, lease: float) -> list[ClaimedMessage]:
        async with self._conn() as c:
            return await claim_messages(c, worker, now, limit, lease)

    async def save_links(self, message_id: int, links: Sequence[tuple[int, str]]) -> None:
        # the first save stays: a retry's rewrite must not move what sent mail points at
        await self._execute("INSERT INTO links (message_id, urls) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                            message_id, url_list(links))

    async def finish(self, message_id: int, results: Sequence[RecipientResult], outcome: MessageOutcome, now: float,
                     rewrite_note: str | None = None, dsn: NewMessage | None = None) -> str:
        # one statement is its own transaction; a DSN makes it two in one: a bounce is never lost nor sent twice
        async with self._conn(transaction=dsn is not None) as c:
            if dsn is not None:
                await _spool(c, dsn)
            erased = await finish_message(c, message_id, results, outcome, now, rewrite_note)
        if erased:
            self._erased_since_vacuum = True
            if time.monotonic() - self._last_vacuum > VACUUM_EVERY:
                await self.checkpoint()
        return outcome.status

    async def lock_holders(self) -> set[str]:
        return {r[0] for r in await self._fetch(
            "SELECT DISTINCT locked_by FROM messages WHERE locked_by IS NOT NULL")}

    async def renew(self, worker: str, until: float) -> None:
        await self._execute("UPDATE messages SET locked_until = $1 WHERE locked_by = $2", until, worker)

    async def release(self, worker: str) -> None:
        await self._execute("UPDATE messages SET locked_by = NULL, locked_until = NULL WHERE locked_by = $1", worker)

    async def capture(self, message_id: int | None, mail_from: str, rcpt_tos: Sequence[str],
                      data: bytes, now: float) -> None:
        await self._execute(
            "INSERT INTO captured (message_id, mail_from, rcpt_tos, data, at) VALUES ($1, $2, $3, $4, $5)",
            message_id, mail_from, json.dumps(list(rcpt_tos)), data, now)

    async def captured(self, message_id: int | None = None) -> list[CapturedCopy]:
        if message_id is None:
            rows = await self._fetch("SELECT * FROM captured ORDER BY id")
        else:
            rows = await self._fetch("SELECT * FROM captured WHERE message_id = $1 ORDER BY id", message_id)
        return [CapturedCopy(r["id"], r["message_id"], r["mail_from"], tuple(json.loads(r["rcpt_tos"])),
                             bytes(r["data"]), r["at"]) for r in rows]

    async def message_row(self, message_id: int) -> dict | None:
        async with self._conn() as c:
            row = await c.fetchrow("SELECT * FROM messages WHERE id = $1", message_id)
            if row is None:
                return None
            out = dict(row)
            out["recipients"] = [dict(r) for r in await c.fetch(
                "SELECT * FROM recipients WHERE message_id = $1 ORDER BY id", message_id)]
            out["has_body"] = await c.fetchval("SELECT 1 FROM bodies WHERE message_id = $1", message_id) is not None
            return out

    async def queue_counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in await self._fetch("SELECT status, COUNT(*) FROM messages GROUP BY status")}

    # hits

    async def copy_target(self, token: str) -> CopyTarget | None:
        row = await self._fetchrow(
            "SELECT k.id, k.message_id, k.recipient, k.delivered_at, m.user_id, l.urls FROM copies k"
            " JOIN messages m ON m.id = k.message_id LEFT JOIN links l ON l.message_id = k.message_id"
            " WHERE k.token = $1", token)
        if row is None:
            return None
        return CopyTarget(row["id"], row["message_id"], row["user_id"], row["recipient"], row["delivered_at"],
                          by_position(row["urls"]))

    async def copy_recipients(self, copy_id: int) -> list[str]:
        # through the message, whose recipients are indexed (copy_id is not)
        return [r[0] for r in await self._fetch(
            "SELECT r.address FROM copies k JOIN recipients r ON r.message_id = k.message_id"
            " WHERE k.id = $1 AND r.copy_id = k.id ORDER BY r.id", copy_id)]


async def _start_session(c: asyncpg.Connection) -> None:
    """A new pooled connection: bodies compressed with lz4 where the server has it (PostgreSQL
    14+), about three times less CPU per mail than the default pglz, at a similar size."""
    await c.execute("SELECT set_config('default_toast_compression', 'lz4', false) FROM pg_settings"
                    " WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)")


async def _keep_session(c: asyncpg.Connection) -> None:
    """Instead of asyncpg's reset on every release (RESET ALL, UNLISTEN *, ... : a round trip per
    store call): nothing here changes a pooled session's settings, listens or keeps an advisory
    lock past its call (_migrate unlocks; checkpoint() has a connection of its own). An open
    transaction is still rolled back by the pool."""


async def _migrate(c: asyncpg.Connection) -> None:
    # a session lock: held across the migrations' own transactions, released below
    await c.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await c.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        version = await c.fetchval("SELECT max(version) FROM schema_version") or 0
        for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
            async with c.transaction():
                await c.execute(sql)
                await c.execute("INSERT INTO schema_version (version) VALUES ($1)", number)
            log.info("store migrated to version %d", number)
    finally:
        await c.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


def _reason(e: BaseException) -> str:
    if isinstance(e, asyncio.TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT:g}s"
    return str(e) or type(e).__name__


def _user(row: asyncpg.Record | None) -> User | None:
    if row is None:
        return None
    return User(row["id"], row["email"], row["is_admin"], row["password_hash"], row["disabled"], row["language"],
                row["timezone"])


async def _policy(c: asyncpg.Connection, user_id: int) -> UserPolicy | None:
    return _policy_of(await c.fetchrow("SELECT * FROM policies WHERE user_id = $1", user_id))


def _policy_of(row: asyncpg.Record | None) -> UserPolicy | None:
    """A policies row (or its columns left-joined to nothing: None) as a UserPolicy."""
    if row is None or row["user_id"] is None:
        return None
    sticky = Choice(**json.loads(row["sticky_choice"])) if row["sticky_choice"] else None
    return UserPolicy(mode=row["mode"], opens=row["opens"], clicks=row["clicks"], notify=row["notify"],
                      sticky=row["sticky"], sticky_choice=sticky)


async def _put_policy(c: asyncpg.Connection, user_id: int, p: UserPolicy) -> None:
    sticky = json.dumps(asdict(p.sticky_choice)) if p.sticky_choice else None
    await c.execute(
        "INSERT INTO policies (user_id, mode, opens, clicks, notify, sticky, sticky_choice)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id) DO UPDATE SET mode = excluded.mode,"
        " opens = excluded.opens, clicks = excluded.clicks, notify = excluded.notify,"
        " sticky = excluded.sticky, sticky_choice = excluded.sticky_choice",
        user_id, p.mode, p.opens, p.clicks, p.notify, p.sticky, sticky)


async def _note_ip(c: asyncpg.Connection, user_id: int, ip: str, now: float) -> None:
    await c.execute(
        "INSERT INTO sender_ips (user_id, ip, last_seen) VALUES ($1, $2, $3)"
        " ON CONFLICT (user_id, ip) DO UPDATE SET last_seen = excluded.last_seen", user_id, ip, now)


async def _spool(c: asyncpg.Connection, m: NewMessage) -> int:
    message_id = await insert_message(c, m)
    if m.user_id is not None and m.sticky_choice is not None:
        await _put_policy(c, m.user_id, with_sticky_choice(await _policy(c, m.user_id), m.sticky_choice))
    return message_id
