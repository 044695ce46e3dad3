"""Store contract: the spool's lease, retries, bounces with their DSN, sticky choices, capture, counts."""
from __future__ import annotations

from relay.control import Choice
from relay.records import NewCopy, NewEvent, NewMessage, NewRecipient, RecipientResult
from tests.store.mail_helpers import finish

T0 = 1_800_000_000.0


def message(queue_id: str, user_id: int | None, rcpts=("bob@example.org",), *, at: float = T0,
            sticky: Choice | None = None, copies=(), is_dsn: bool = False) -> NewMessage:
    return NewMessage(
        queue_id=queue_id, user_id=user_id, mail_from="alice@example.com", message_id=f"<{queue_id}@x>",
        subject="s", body=b"Subject: s\r\n\r\nbody\r\n", received_at=at, client_ip="192.0.2.7",
        recipients=tuple(NewRecipient(r, i if copies else None) for i, r in enumerate(rcpts)),
        copies=tuple(copies), sticky_choice=sticky, is_dsn=is_dsn)


async def test_a_lease_runs_out_and_another_worker_takes_the_mail(store):
    alice = await store.add_user("alice@example.com", "h")
    await store.spool(message("Q1", alice.id))
    [first] = await store.claim("w1", T0, 10, lease=60)
    assert await store.lock_holders() == {"w1"}
    assert await store.claim("w2", T0 + 59, 10, 60) == []  # still leased
    [again] = await store.claim("w2", T0 + 61, 10, 60)  # w1 died: its lease ran out
    assert again.id == first.id and await store.lock_holders() == {"w2"}
    results = [RecipientResult(again.recipients[0].id, "sent")]
    await finish(store, again, results, T0 + 62)
    assert await store.lock_holders() == set()


async def test_claims_are_due_first_limited_and_never_shared(store):
    alice = await store.add_user("alice@example.com", "h")
    for n, at in enumerate([T0 + 3, T0 + 1, T0 + 2, T0 + 100]):
        await store.spool(message(f"Q{n}", alice.id, at=at))
    first = await store.claim("w1", T0 + 10, 2, 60)
    assert [m.queue_id for m in first] == ["Q1", "Q2"]  # oldest due first; Q3 is not due yet
    second = await store.claim("w2", T0 + 10, 10, 60)
    assert [m.queue_id for m in second] == ["Q0"]


async def test_deferral_then_retry_at_its_time_then_bounce_with_its_dsn(store):
    alice = await store.add_user("alice@example.com", "h")
    mid = await store.spool(message("Q1", alice.id, ("bob@example.org", "carol@example.org")))
    [m] = await store.claim("w", T0, 10, 60)
    bob, carol = m.recipients
    results = [RecipientResult(bob.id, "sent"), RecipientResult(carol.id, "deferred", "451 later", T0 + 3600)]
    status = await finish(store, m, results, T0 + 1)
    assert status == "deferred" and await store.claim("w", T0 + 2, 10, 60) == []  # not due before T0 + 3600
    [m] = await store.claim("w", T0 + 3600, 10, 60)  # due at its retry time
    assert [(r.address, r.attempts) for r in m.recipients] == [("carol@example.org", 1)]
    dsn = message("DSN1", None, ("alice@example.com",), at=T0 + 6, is_dsn=True)
    results = [RecipientResult(carol.id, "bounced", "550 no")]
    status = await finish(store, m, results, T0 + 3601, dsn=dsn)
    assert status == "partial"
    row = await store.message_row(mid)
    assert [(r["status"], r["attempts"], r["detail"]) for r in row["recipients"]] == [
        ("sent", 1, ""), ("bounced", 2, "550 no")]
    assert row["sent_at"] == T0 + 1 and not row["has_body"]
    [bounce] = await store.claim("w", T0 + 7, 10, 60)  # the DSN was spooled with the bounce
    assert bounce.queue_id == "DSN1" and bounce.user_id is None
    results = [RecipientResult(bounce.recipients[0].id, "bounced")]
    assert await finish(store, bounce, results, T0 + 8) == "bounced"
    assert await store.queue_counts() == {"partial": 1, "bounced": 1}
    assert [m.id for m in await store.message_reports(None)] == [mid]  # DSNs are not listed


async def test_a_retry_is_claimed_with_the_settled_statuses_and_rolls_up_with_them(store):
    alice = await store.add_user("alice@example.com", "h")
    rcpts = ("bob@example.org", "carol@example.org", "dave@example.org")
    mid = await store.spool(message("Q1", alice.id, rcpts, copies=[NewCopy(f"tok-{n}", r, True, True)
                                                                   for n, r in enumerate(rcpts)]))
    [m] = await store.claim("w", T0, 10, 60)
    assert m.settled == ()
    bob, carol, dave = m.recipients
    first = [RecipientResult(bob.id, "sent"), RecipientResult(carol.id, "bounced", "550 no"),
             RecipientResult(dave.id, "deferred", "451 later", T0 + 60)]
    assert await finish(store, m, first, T0 + 1) == "deferred"
    assert (await store.message_row(mid))["has_body"]  # dave waits for it
    [m] = await store.claim("w", T0 + 60, 10, 60)
    assert [r.id for r in m.recipients] == [dave.id] and m.settled == ("sent", "bounced")
    second = [RecipientResult(dave.id, "bounced", "550 gone")]  # no DSN: one statement on PostgreSQL
    assert await finish(store, m, second, T0 + 61) == "partial"
    row = await store.message_row(mid)
    assert (row["status"], row["sent_at"], row["has_body"], row["locked_by"]) == ("partial", T0 + 1, False, None)
    assert [(r["status"], r["attempts"], r["done_at"]) for r in row["recipients"]] == [
        ("sent", 1, T0 + 1), ("bounced", 1, T0 + 1), ("bounced", 2, T0 + 61)]
    assert [(await store.copy_target(f"tok-{n}")).delivered_at for n in range(3)] == [T0 + 1, None, None]
    assert await store.claim("w", T0 + 3600, 10, 60) == []


async def test_a_recipient_erased_while_its_mail_is_retried_still_counts(store):
    alice = await store.add_user("alice@example.com", "h")
    mid = await store.spool(message("Q1", alice.id, ("bob@example.org", "carol@example.org")))
    [m] = await store.claim("w", T0, 10, 60)
    bob, carol = m.recipients
    first = [RecipientResult(bob.id, "sent"), RecipientResult(carol.id, "deferred", "451 later", T0 + 60)]
    await finish(store, m, first, T0 + 1)
    [m] = await store.claim("w", T0 + 60, 10, 60)
    # bob's row goes while the retry is in flight (carol's, still queued, stays)
    await store.erase_subject("bob@example.org", keep_trackable=False, now=T0 + 61)
    second = [RecipientResult(carol.id, "sent")]
    assert await finish(store, m, second, T0 + 62) == "sent"
    row = await store.message_row(mid)
    assert [(r["address"], r["status"]) for r in row["recipients"]] == [("carol@example.org", "sent")]
    assert row["status"] == "sent" and not row["has_body"]


async def test_the_rewrite_note_and_links_are_kept(store):
    alice = await store.add_user("alice@example.com", "h")
    mid = await store.spool(message("Q1", alice.id, copies=[NewCopy("tok-1", "bob@example.org", True, True)]))
    [m] = await store.claim("w", T0, 10, 60)
    assert not m.links_saved
    await store.save_links(mid, [(0, "https://example.com/a")])
    await store.save_links(mid, [(0, "https://example.com/b"), (1, "https://example.com/c")])  # a retry: no change
    await store.release("w")
    [m] = await store.claim("w", T0, 10, 60)
    assert m.links_saved
    results = [RecipientResult(m.recipients[0].id, "sent")]
    await finish(store, m, results, T0 + 1, rewrite_note="html: too deep")
    assert (await store.message_row(mid))["rewrite_note"] == "html: too deep"
    target = await store.copy_target("tok-1")
    assert (target.message_id, target.user_id, target.links) == (mid, alice.id, {0: "https://example.com/a"})
    assert target.delivered_at == T0 + 1 and await store.copy_target("tok-unknown") is None


async def test_an_explicit_choice_becomes_the_sticky_default(store):
    alice = await store.add_user("alice@example.com", "h")
    await store.spool(message("Q1", alice.id, sticky=Choice(True, False)))
    policy = await store.policy(alice.id)
    assert policy.sticky_choice == Choice(True, False) and policy.mode == "opt-in"  # defaults kept
    policy, _ = await store.sending_context(alice.id, [])
    assert policy.sticky_choice == Choice(True, False)


async def test_capture_keeps_delivered_copies(store):
    alice = await store.add_user("alice@example.com", "h")
    mid = await store.spool(message("Q1", alice.id))
    await store.capture(mid, "alice@example.com", ["bob@example.org"], b"data-1", T0)
    await store.capture(None, "", ["alice@example.com"], b"data-2", T0 + 1)
    everything = await store.captured()
    assert [(c.message_id, list(c.rcpt_tos), c.data) for c in everything] == [
        (mid, ["bob@example.org"], b"data-1"), (None, ["alice@example.com"], b"data-2")]
    assert [c.data for c in await store.captured(mid)] == [b"data-1"]


async def test_recorded_hits_are_stored_as_given(store):
    alice = await store.add_user("alice@example.com", "h")
    mid = await store.spool(message("Q1", alice.id, copies=[NewCopy("tok-1", "bob@example.org", True, True)]))
    target = await store.copy_target("tok-1")
    await store.record_hits([NewEvent(target.copy_id, mid, "open", T0 + 5, None, "198.51.100.0", "UA \u00e9", "proxy")])
    await store.record_hits([])
    [event] = (await store.message_report(mid, alice.id)).events
    assert (event.type, event.at, event.ip, event.user_agent, event.cls, event.implied, event.recipient) == (
        "open", T0 + 5, "198.51.100.0", "UA \u00e9", "proxy", False, "bob@example.org")
