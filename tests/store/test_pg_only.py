"""PostgreSQL only: erased bodies in a backlog, and connections cut under the store."""
from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from hits_helpers import wait_until
from relay.errors import StoreUnavailable
from relay.records import RecipientResult
from relay.store import open_store
from relay.store.postgres import PostgresStore
from tests.store.mail_helpers import finish
from store.test_store import MARKER, message, stored_bytes


async def test_a_big_backlog_is_rewritten_once_it_has_shrunk(pg_url):
    store = PostgresStore(pg_url)
    await store.open()
    try:
        store.full_rewrite_max = 0  # every queue is "too big" to rewrite now
        user = await store.add_user("alice@example.com", "h")
        await store.spool(message("WAITING", user.id, at=time.time() + 3600, body=b"Subject: w\r\n\r\nlater\r\n"))
        await store.spool(message("Q1", user.id))
        [m] = await store.claim("w", time.time(), 10, 60)
        results, now = [RecipientResult(m.recipients[0].id, "sent")], time.time()
        await finish(store, m, results, now)
        await store.checkpoint()
        assert store.erasure_pending  # only a plain VACUUM ran: the rewrite is still owed
        store.full_rewrite_max = 64 << 20
        await store.checkpoint()
        assert not store.erasure_pending
        for where, data in await stored_bytes(pg_url):
            assert MARKER not in data, f"body left in {where}"
    finally:
        await store.close()


async def test_a_connection_cut_mid_query_is_the_store_s_own_error_and_the_pool_recovers(pg_url, pg_server):
    store = PostgresStore(pg_url)
    await store.open()
    admin = await asyncpg.connect(pg_server.url())
    try:
        await store.add_user("alice@example.com", "h")
        slow = asyncio.create_task(store._execute("SELECT pg_sleep(30)"))  # a query in flight

        async def cut() -> bool:  # what a server restart or a failover does to it
            return await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"
                " AND datname = $1", pg_url.rsplit("/", 1)[1]) == 1

        await wait_until(cut)
        with pytest.raises(StoreUnavailable):
            await slow
        assert [u.email for u in await store.users()] == ["alice@example.com"]  # a new connection
    finally:
        await admin.close()
        await store.close()


async def test_mail_of_one_sender_does_not_wait_for_another_mail_s_commit(pg_url):
    """Each spool noted the sender's IP with an upsert, which locks that one row until COMMIT:
    twenty sessions of one sender spooled one after the other, one disk sync each."""
    store = PostgresStore(pg_url)
    await store.open()
    other = await asyncpg.connect(pg_url)
    try:
        user = await store.add_user("alice@example.com", "h")
        await store.spool(message("Q1", user.id))
        async with other.transaction():  # another session's mail, not yet committed
            await other.execute("SELECT * FROM sender_ips FOR UPDATE")
            await asyncio.wait_for(store.spool(message("Q2", user.id)), 5)
        assert await store.recent_sender_ips(user.id, 0) == {"192.0.2.7"}
    finally:
        await other.close()
        await store.close()


@pytest.mark.parametrize("connections", [2, 6])
async def test_store_connections_caps_each_process_s_pool(pg_url, connections):
    """store.connections works: however many calls wait, no more connections are opened."""
    store = open_store(pg_url, connections)
    await store.open()
    try:
        user = await store.add_user("alice@example.com", "h")
        await asyncio.gather(*(store.sending_context(user.id, ["bob@example.org"]) for _ in range(40)))
        watcher = await asyncpg.connect(pg_url)
        try:
            opened = await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        finally:
            await watcher.close()
        assert 1 < opened <= connections
        if connections > 2:
            assert opened > 2  # the cap above is the key's, not a pool too small to open more
    finally:
        await store.close()
