"""Store contract for the privacy lifecycle: records of the lists, retention, access, erasure."""
from __future__ import annotations

import time
from pathlib import Path

import asyncpg

from relay.policy import ERASED_PREFIX, decide, erased_entry, UserPolicy
from relay.control import MessageControl
from relay.records import NewEvent, PrivacyRecord, WebhookSpec
from relay.store import Store
from tests.store.mail_helpers import deliver as delivered, tracked_message
from tests.store.test_hit_store import T0

DAY = 86400.0
BOB = "bob@example.org"


async def mail(store: Store, user_id: int, queue_id: str, rcpts: tuple[str, ...], *, shared: bool = False,
               at: float = T0, deliver: bool = True, subject: str = "Numbers") -> tuple[int, list[int]]:
    """A tracked mail with three links, delivered at+1 (or left queued); returns (id, copy ids)."""
    message = tracked_message(queue_id, user_id, rcpts, at=at, shared=shared, subject=subject)
    mid = await store.spool(message)
    copy_ids = [(await store.copy_target(c.token)).copy_id for c in message.copies]
    if deliver:
        await delivered(store, mid, [(0, "https://example.com/a"), (1, f"https://example.com/u?who={rcpts[0]}"),
                                     (2, "https://example.com/c")], at)
    return mid, copy_ids


def hit(mid: int, copy_id: int, kind: str, at: float, position: int | None = None) -> NewEvent:
    return NewEvent(copy_id, mid, kind, at, position, "203.0.113.0", "Thunderbird/115", "human")


async def test_list_entries_carry_who_when_and_where_from(store):
    assert await store.privacy_add("consent", "Carol@Example.org", source="import:crm.csv", recorded_by="",
                                   at=T0, given_at=T0 - DAY)
    assert await store.privacy_add("dnt", "@secret.example", source="api", recorded_by="admin@example.com", at=T0)
    added = await store.privacy_add_many("consent", [PrivacyRecord("carol@example.org", T0 + 5, "", "cli"),
                                                     PrivacyRecord("dave@example.org", T0 + 5, "", "cli")])
    assert added == 1  # carol keeps her first record
    assert await store.privacy_records("consent") == [
        PrivacyRecord("carol@example.org", T0, "", "import:crm.csv", T0 - DAY),
        PrivacyRecord("dave@example.org", T0 + 5, "", "cli", None)]
    assert await store.privacy_records("dnt") == [PrivacyRecord("@secret.example", T0, "admin@example.com", "api")]
    assert await store.privacy_list("consent") == ["carol@example.org", "dave@example.org"]


async def test_retention_purges_old_events_then_old_mail_and_its_links_keep_redirecting(store):
    alice = await store.add_user("alice@example.com", "h")
    old, [old_copy] = await mail(store, alice.id, "OLD", (BOB,))
    busy, [busy_copy] = await mail(store, alice.id, "BUSY", ("carol@example.org",))
    waiting, _ = await mail(store, alice.id, "WAIT", ("dave@example.org",), deliver=False)
    await store.record_hits([hit(old, old_copy, "open", T0 + 10), hit(old, old_copy, "click", T0 + 20, 1),
                             hit(busy, busy_copy, "open", T0 + 30), hit(busy, busy_copy, "open", T0 + 300 * DAY)])
    cutoff = T0 + 200 * DAY
    preview = await store.purge_preview(cutoff)
    assert (preview.events, preview.messages) == (3, 1)  # OLD only: BUSY was read since
    total = None
    for _ in range(20):  # bounded batches of 2 rows of each kind
        batch = await store.purge(cutoff, 2)
        if not batch.total:
            break
        total = batch if total is None else total + batch
    assert total == preview
    assert await store.purge_preview(cutoff) == type(preview)()
    assert await store.copy_target("tok-OLD-0") is None
    assert await store.retired_link("tok-OLD-0", 1) == f"https://example.com/u?who={BOB}"
    assert await store.retired_link("tok-OLD-0", 7) is None and await store.retired_link("tok-nope", 1) is None
    report = await store.message_report(busy, alice.id)  # kept: it was read since; its old hit is gone
    assert [e.at for e in report.events] == [T0 + 300 * DAY]
    assert await store.message_report(waiting, alice.id) is not None  # queued mail is never purged
    assert await store.message_report(old, alice.id) is None


async def test_the_access_request_lists_what_was_sent_and_hit_and_the_records(store):
    alice = await store.add_user("alice@example.com", "h")
    one, [bob_copy, _] = await mail(store, alice.id, "ONE", (BOB, "carol@example.org"), subject="Offer")
    two, [shared_copy] = await mail(store, alice.id, "TWO", (BOB, "dave@example.org"), shared=True, at=T0 + 50)
    await mail(store, alice.id, "OTHER", ("carol@example.org",))
    await store.record_hits([hit(one, bob_copy, "open", T0 + 10), hit(one, bob_copy + 1, "open", T0 + 11),
                             hit(two, shared_copy, "click", T0 + 60, 0)])
    await store.privacy_add("consent", BOB, source="cli", at=T0 - 5)
    data = await store.subject("Bob@Example.org")
    assert [(m.subject, m.sender, m.message_id, m.status) for m in data.mails] == [
        ("Offer", "alice@example.com", "<ONE@x>", "sent"), ("Numbers", "alice@example.com", "<TWO@x>", "sent")]
    assert [(e.type, e.at, e.ip, e.shared) for e in data.mails[0].events] == [("open", T0 + 10, "203.0.113.0", False)]
    assert [(e.type, e.url, e.shared) for e in data.mails[1].events] == [
        ("open", None, True), ("click", "https://example.com/a", True)]
    assert [r.entry for r in data.consent] == [BOB] and data.do_not_track == ()


async def store_text(store_url: str) -> list[tuple[str, bytes]]:
    """What an erasure must leave no trace in: SQLite's files byte for byte; on PostgreSQL every
    table's contents (dead rows in pages until VACUUM reuses them: README, "Privacy")."""
    if store_url.startswith("sqlite:///"):
        db = Path(store_url[len("sqlite:///"):])
        return [(f.name, f.read_bytes()) for f in db.parent.glob(db.name + "*")]
    conn = await asyncpg.connect(store_url)
    try:
        tables = [r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return [(t, "\n".join(str(dict(r)) for r in await conn.fetch(f"SELECT * FROM {t}")).encode())
                for t in tables]
    finally:
        await conn.close()


async def test_erasure_leaves_nothing_about_the_address_and_keeps_them_untracked(store, store_url):
    alice = await store.add_user("alice@example.com", "h")
    await store.add_webhook(alice.id, WebhookSpec("https://hooks.example/x"), "s", T0)
    alone, [alone_copy] = await mail(store, alice.id, "ALONE", (BOB,))
    split, [bob_copy, carol_copy] = await mail(store, alice.id, "SPLIT", (BOB, "carol@example.org"))
    shared, [shared_copy] = await mail(store, alice.id, "SHARED", (BOB, "dave@example.org"), shared=True)
    await store.capture(alone, "alice@example.com", [BOB], b"To: Bob <BOB@example.org>\r\n\r\nhi\r\n", T0)
    await store.record_hits([hit(alone, alone_copy, "open", T0 + 10), hit(split, bob_copy, "open", T0 + 11),
                             hit(split, carol_copy, "open", T0 + 12), hit(shared, shared_copy, "open", T0 + 13)])
    await store.privacy_add("consent", BOB)
    assert any(BOB.encode() in data for _, data in await store_text(store_url))

    counts = await store.erase_subject("BOB@example.org", keep_trackable=False, now=T0 + 100)
    assert (counts.messages, counts.copies, counts.recipients, counts.captured) == (1, 1, 3, 1)
    assert counts.events == 2 and counts.deliveries == 2 and counts.links == 2 and counts.still_queued == 0
    await store.checkpoint()
    for where, data in await store_text(store_url):
        assert BOB.encode() not in data.lower(), f"{BOB} left in {where}"
    assert (await store.subject(BOB)).mails == ()
    carol = await store.subject("carol@example.org")
    assert [(m.message_id, len(m.events)) for m in carol.mails] == [("<SPLIT@x>", 1)]
    report = await store.message_report(shared, alice.id)
    assert [r.address for r in report.recipients] == ["dave@example.org"]
    # their link is gone, the others keep their positions (the mail that was sent has them)
    assert [(x.position, x.url) for x in report.links] == [(0, "https://example.com/a"), (2, "https://example.com/c")]
    assert (await store.copy_target("tok-SHARED-all")).links == {0: "https://example.com/a", 2: "https://example.com/c"}
    [entry] = await store.privacy_records("dnt")
    assert entry.entry == erased_entry(BOB) and entry.entry.startswith(ERASED_PREFIX) and entry.source == "erase"
    _, rules = await store.sending_context(alice.id, ["Bob@example.org", "carol@example.org"])
    plan = decide(UserPolicy(mode="always"), MessageControl(), sender="alice@example.com",
                  recipients=["Bob@example.org", "carol@example.org"], privacy=rules)
    assert [(p.address, p.tracked, p.reason) for p in plan.recipients][0] == ("Bob@example.org", False, "do-not-track")
    assert plan.recipients[1].tracked


async def test_erasure_may_leave_them_trackable_and_lets_queued_mail_go(store):
    alice = await store.add_user("alice@example.com", "h")
    await mail(store, alice.id, "LATER", (BOB,), deliver=False)
    counts = await store.erase_subject(BOB, keep_trackable=True, now=time.time())
    assert counts.still_queued == 1 and counts.messages == 0
    assert await store.privacy_records("dnt") == []
    assert [m.status for m in (await store.subject(BOB)).mails] == ["queued"]


async def test_a_users_mail_is_erased_in_batches_but_not_what_is_still_queued(store):
    alice = await store.add_user("alice@example.com", "h")
    for n in range(3):
        mid, _ = await mail(store, alice.id, f"M{n}", (BOB,))
        await store.capture(mid, "alice@example.com", [BOB], b"hi", T0)
    await mail(store, alice.id, "LATER", (BOB,), deliver=False)
    assert [await store.erase_user_mail(alice.id, 2) for _ in range(3)] == [2, 1, 0]
    assert [m.message_id for m in (await store.subject(BOB)).mails] == ["<LATER@x>"]
    assert await store.captured() == []
