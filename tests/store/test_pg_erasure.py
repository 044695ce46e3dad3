"""PostgreSQL only: how erased bodies leave the bodies table when the queue is a backlog."""
from __future__ import annotations

import time

from relay.records import RecipientResult
from relay.store.postgres import PostgresStore
from store.test_store import MARKER, message, stored_bytes


async def test_a_big_backlog_is_rewritten_once_it_has_shrunk(pg_url):
    store = PostgresStore(pg_url)
    await store.open()
    try:
        store.full_rewrite_max = 0  # every queue is "too big" to rewrite now
        user = await store.add_user("alice@example.com", "h")
        await store.spool(message("WAITING", user.id, at=time.time() + 3600, body=b"Subject: w\r\n\r\nlater\r\n"))
        mid = await store.spool(message("Q1", user.id))
        [m] = await store.claim("w", time.time(), 10, 60)
        await store.finish(mid, [RecipientResult(m.recipients[0].id, "sent")], time.time())
        await store.checkpoint()
        assert store.erasure_pending  # only a plain VACUUM ran: the rewrite is still owed
        store.full_rewrite_max = 64 << 20
        await store.checkpoint()
        assert not store.erasure_pending
        for where, data in await stored_bytes(pg_url):
            assert MARKER not in data, f"body left in {where}"
    finally:
        await store.close()
