"""Store contract: what every engine must do (tests/store/conftest.py runs each on SQLite and PostgreSQL)."""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import asyncpg
import pytest

from relay.control import Choice
from relay.errors import StoreConflict, StoreUnavailable
from relay.policy import UserPolicy
from relay.records import NewCopy, NewMessage, NewRecipient, RecipientResult
from tests.store.mail_helpers import finish

MARKER = b"UNIQUE-BODY-MARKER-7f3a9c"


def message(queue_id: str, user_id: int | None, rcpts=("bob@example.org",), copies=(),
            at: float | None = None, body: bytes = b"Subject: s\r\n\r\n" + MARKER + b"\r\n") -> NewMessage:
    return NewMessage(
        queue_id=queue_id, user_id=user_id, mail_from="alice@example.com", message_id="<m@x>",
        subject="s", body=body, received_at=at or time.time(), client_ip="192.0.2.7",
        recipients=tuple(NewRecipient(r, i if copies else None) for i, r in enumerate(rcpts)),
        copies=tuple(copies),
    )


async def test_users_tokens_and_policy(store):
    user = await store.add_user("Alice@Example.com", "hash", True)
    assert user.email == "alice@example.com" and user.is_admin
    assert (await store.user_by_email("ALICE@example.com")).id == user.id
    with pytest.raises(StoreConflict):
        await store.add_user("alice@example.com", "hash")
    await store.add_api_token(user.id, "tokhash")
    assert (await store.user_by_api_token("tokhash")).id == user.id
    assert await store.user_by_api_token("other") is None
    assert await store.policy(user.id) is None
    await store.set_policy(user.id, UserPolicy(mode="always", clicks=False, sticky_choice=Choice(True, False)))
    got = await store.policy(user.id)
    assert got.mode == "always" and got.clicks is False and got.sticky_choice == Choice(True, False)
    assert await store.delete_user("alice@example.com") and await store.users() == []


async def stored_bytes(store_url: str) -> list[tuple[str, bytes]]:
    """Every byte the store keeps for mail bodies: SQLite's files; PostgreSQL's pages of the
    bodies table and its TOAST table (pageinspect). PostgreSQL's WAL is out of reach: README."""
    if store_url.startswith("sqlite:///"):
        db = Path(store_url[len("sqlite:///"):])
        return [(f.name, f.read_bytes()) for f in db.parent.glob(db.name + "*")]
    conn = await asyncpg.connect(store_url)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
        toast = await conn.fetchval("SELECT reltoastrelid::regclass::text FROM pg_class WHERE relname = 'bodies'")
        pages = []
        for relation in ("bodies", toast):
            count = await conn.fetchval("SELECT pg_relation_size($1::regclass) / current_setting('block_size')::int",
                                        relation)
            pages += [(f"{relation} page {n}", await conn.fetchval("SELECT get_raw_page($1, $2)", relation, n))
                      for n in range(count)]
        return pages
    finally:
        await conn.close()


async def test_spool_claim_finish_erases_the_body_for_real(store, store_url):
    user = await store.add_user("alice@example.com", "h")
    # a body still queued keeps the pages in use (an empty table is simply truncated)
    await store.spool(message("WAITING", user.id, at=time.time() + 3600, body=b"Subject: w\r\n\r\nlater\r\n"))
    mid = await store.spool(message("Q1", user.id, ("bob@example.org", "carol@example.org"),
                                    copies=[NewCopy("tok-a", "bob@example.org", True, True),
                                            NewCopy("tok-b", "carol@example.org", True, False)]))
    [claimed] = await store.claim("w1", time.time(), 10, 60)
    assert claimed.id == mid and MARKER in claimed.body
    assert [r.copy.token for r in claimed.recipients] == ["tok-a", "tok-b"]
    assert await store.claim("w2", time.time(), 10, 60) == []  # locked
    bob, carol = claimed.recipients
    now = time.time()
    results = [RecipientResult(bob.id, "sent"), RecipientResult(carol.id, "deferred", "451", now - 1)]
    assert await finish(store, claimed, results, now) == "deferred"
    [again] = await store.claim("w2", time.time(), 10, 60)
    assert [r.address for r in again.recipients] == ["carol@example.org"]
    results, now = [RecipientResult(carol.id, "sent")], time.time()
    assert await finish(store, again, results, now) == "sent"
    row = await store.message_row(mid)
    assert row["status"] == "sent" and not row["has_body"] and row["sent_at"]
    await store.checkpoint()
    for where, data in await stored_bytes(store_url):
        assert MARKER not in data, f"body left in {where}"
    target = await store.copy_target("tok-a")
    assert target.recipient == "bob@example.org" and target.delivered_at is not None


async def test_erased_bodies_leave_no_bytes_inline_or_toasted(store, store_url):
    user = await store.add_user("alice@example.com", "h")
    later = time.time() + 3600
    big = os.urandom(6000)  # incompressible: PostgreSQL keeps it in the TOAST table
    for queue_id, body in (("WAIT-SMALL", b"x" * 50), ("WAIT-BIG", big)):  # keeps the pages in use
        await store.spool(message(queue_id, user.id, at=later, body=b"Subject: w\r\n\r\n" + body))
    for queue_id, body in (("SMALL", MARKER), ("BIG", MARKER + big)):
        await store.spool(message(queue_id, user.id, body=b"Subject: s\r\n\r\n" + body))
    for m in await store.claim("w", time.time(), 10, 60):
        results, now = [RecipientResult(m.recipients[0].id, "sent")], time.time()
        assert await finish(store, m, results, now) == "sent"
    await store.checkpoint()
    for where, data in await stored_bytes(store_url):
        assert MARKER not in data, f"body left in {where}"
    assert (await store.queue_counts())["queued"] == 2


async def test_concurrent_spools_are_group_committed(store):
    user = await store.add_user("alice@example.com", "h")
    ids = await asyncio.gather(*(store.spool(message(f"Q{i}", user.id)) for i in range(200)))
    assert len(set(ids)) == 200
    assert (await store.queue_counts())["queued"] == 200


async def test_a_failing_job_does_not_fail_its_batch(store):
    user = await store.add_user("alice@example.com", "h")
    results = await asyncio.gather(store.spool(message("DUP", user.id)), store.spool(message("DUP", user.id)),
                                   store.spool(message("OK", user.id)), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results[:2]) == ["StoreConflict", "int"]
    assert isinstance(results[2], int)
    # SQLite ran the batch twice (the second time job by job): the good jobs were applied once
    assert (await store.queue_counts())["queued"] == 2


async def test_release_returns_claims(store):
    user = await store.add_user("alice@example.com", "h")
    await store.spool(message("Q1", user.id))
    assert len(await store.claim("w1", time.time(), 10, 600)) == 1
    await store.release("w1")
    assert len(await store.claim("w2", time.time(), 10, 600)) == 1


async def test_renew_extends_the_leases_of_one_workers_claims_only(store):
    user = await store.add_user("alice@example.com", "h")
    for queue_id in ("Q1", "Q2"):
        await store.spool(message(queue_id, user.id))
    now = time.time()
    [mine] = await store.claim("w1", now, 1, 60)
    [theirs] = await store.claim("w2", now, 1, 60)
    await store.renew("w1", now + 600)
    # past both original leases only the one not renewed can be claimed again
    [taken] = await store.claim("w3", now + 100, 10, 60)
    assert taken.id == theirs.id != mine.id
    await store.renew("w1", now + 1000)
    assert [m.id for m in await store.claim("w4", now + 700, 10, 60)] == [theirs.id]


async def test_sending_context_has_privacy_rules_only_for_the_asked_addresses(store):
    for entry in ("bob@example.org", "@secret.example"):
        await store.privacy_add("dnt", entry)
    await store.privacy_add("consent", "x@y.z")
    user = await store.add_user("alice@example.com", "h")
    policy, rules = await store.sending_context(user.id, ["Bob@Example.org", "eve@secret.example", "x@y.z", "z@z.z"])
    assert policy is None
    assert rules.do_not_track == {"bob@example.org", "@secret.example"} and rules.consented == {"x@y.z"}


async def test_a_write_after_close_raises_at_once(store):
    await store.close()
    with pytest.raises(StoreUnavailable, match="closed|not open"):
        await asyncio.wait_for(store.add_user("late@example.com", "h"), 5)
