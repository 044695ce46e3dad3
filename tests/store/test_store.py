"""Store contract: what every engine must do (tests/store/conftest.py runs each on SQLite and PostgreSQL)."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from relay.control import Choice
from relay.errors import StoreConflict
from relay.policy import UserPolicy
from relay.records import NewCopy, NewMessage, NewRecipient, RecipientResult

MARKER = b"UNIQUE-BODY-MARKER-7f3a9c"


def message(queue_id: str, user_id: int | None, rcpts=("bob@example.org",), copies=()) -> NewMessage:
    return NewMessage(
        queue_id=queue_id, user_id=user_id, mail_from="alice@example.com", message_id="<m@x>",
        subject="s", body=b"Subject: s\r\n\r\n" + MARKER + b"\r\n", received_at=time.time(), client_ip="192.0.2.7",
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


async def test_spool_claim_finish_erases_the_body_for_real(store, store_url):
    user = await store.add_user("alice@example.com", "h")
    mid = await store.spool(message("Q1", user.id, ("bob@example.org", "carol@example.org"),
                                    copies=[NewCopy("tok-a", "bob@example.org", True, True),
                                            NewCopy("tok-b", "carol@example.org", True, False)]))
    [claimed] = await store.claim("w1", time.time(), 10, 60)
    assert claimed.id == mid and MARKER in claimed.body
    assert [r.copy.token for r in claimed.recipients] == ["tok-a", "tok-b"]
    assert await store.claim("w2", time.time(), 10, 60) == []  # locked
    bob, carol = claimed.recipients
    status = await store.finish(mid, [RecipientResult(bob.id, "sent"),
                                      RecipientResult(carol.id, "deferred", "451", time.time() - 1)], time.time())
    assert status == "deferred"
    [again] = await store.claim("w2", time.time(), 10, 60)
    assert [r.address for r in again.recipients] == ["carol@example.org"]
    assert await store.finish(mid, [RecipientResult(carol.id, "sent")], time.time()) == "sent"
    row = await store.message_row(mid)
    assert row["status"] == "sent" and not row["has_body"] and row["sent_at"]
    await store.checkpoint()
    if store_url.startswith("sqlite:///"):  # PostgreSQL: see README "PostgreSQL" (VACUUM)
        db = Path(store_url[len("sqlite:///"):])
        for f in db.parent.glob(db.name + "*"):
            assert MARKER not in f.read_bytes(), f"body left in {f.name}"
    target = await store.copy_target("tok-a")
    assert target.recipient == "bob@example.org" and target.delivered_at is not None


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


async def test_sending_context_has_privacy_rules_only_for_the_asked_addresses(store):
    for entry in ("bob@example.org", "@secret.example"):
        await store.privacy_add("dnt", entry)
    await store.privacy_add("consent", "x@y.z")
    user = await store.add_user("alice@example.com", "h")
    policy, rules = await store.sending_context(user.id, ["Bob@Example.org", "eve@secret.example", "x@y.z", "z@z.z"])
    assert policy is None
    assert rules.do_not_track == {"bob@example.org", "@secret.example"} and rules.consented == {"x@y.z"}
