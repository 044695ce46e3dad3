"""Store contract for hits and reports: implied opens, notifications, counts, scoping."""
from __future__ import annotations

from relay.policy import UserPolicy
from relay.records import NewEvent, NewMessage, NewRecipient
from relay.store import Store
from tests.store.mail_helpers import deliver, tracked_message

T0 = 1_800_000_000.0


async def sent_message(store: Store, user_id: int, rcpts=("bob@example.org", "carol@example.org"),
                       shared: bool = False, queue_id: str = "Q1") -> int:
    mid = await store.spool(tracked_message(queue_id, user_id, rcpts, at=T0, shared=shared,
                                            body=b"Subject: Numbers\r\n\r\nhi\r\n"))
    await deliver(store, mid, [(0, "https://example.com/a"), (1, "https://example.com/b")], T0)
    return mid


def hit(copy_id: int, kind: str, at: float, cls: str = "human", position: int | None = None) -> NewEvent:
    return NewEvent(copy_id, 1, kind, T0 + at, position, "203.0.113.0", "UA", cls)


async def test_a_click_implies_one_open_per_class_and_notifies_humans_once(store):
    alice = await store.add_user("alice@example.com", "h")
    mid = await sent_message(store, alice.id)
    stored = await store.record_hits([
        hit(1, "click", 5, "scanner", 0),  # the scanner's click implies the scanner's open
        hit(1, "click", 6, "scanner", 1),
        hit(1, "click", 100, "human", 1),  # images blocked: the click implies a human open
        hit(1, "open", 200, "human"),
        hit(1, "open", 300, "human"),
    ])
    assert stored == 5
    report = await store.message_report(mid, alice.id)
    assert [(e.type, e.cls, e.implied) for e in report.events] == [
        ("open", "scanner", True), ("click", "scanner", False), ("click", "scanner", False),
        ("open", "human", True), ("click", "human", False), ("open", "human", False), ("open", "human", False)]
    bob = report.recipients[0].counts
    assert (bob.opens, bob.human_opens, bob.clicks, bob.human_clicks) == (4, 3, 3, 1)
    assert (bob.first_open_at, bob.last_open_at) == (T0 + 5, T0 + 300)
    assert [(x.position, x.clicks, x.human_clicks) for x in report.links] == [(0, 1, 0), (1, 2, 1)]
    notes = await store.notifications(alice.id)
    assert [(n.type, n.url, n.at) for n in notes] == [
        ("click", "https://example.com/b", T0 + 100), ("open", None, T0 + 100)]
    assert notes[0].recipient == "bob@example.org" and notes[0].subject == "Numbers"


async def test_no_notifications_when_the_policy_says_so_or_for_machines(store):
    alice = await store.add_user("alice@example.com", "h")
    await store.set_policy(alice.id, UserPolicy(notify=False))
    await sent_message(store, alice.id)
    await store.record_hits([hit(1, "open", 50), hit(1, "click", 60, position=0)])
    assert await store.notifications(alice.id) == []
    await store.set_policy(alice.id, UserPolicy(notify=True))
    await store.record_hits([hit(2, "open", 50, "proxy"), hit(2, "open", 51, "prefetch")])
    assert await store.notifications(alice.id) == []


async def test_hits_on_erased_copies_are_skipped_not_fatal(store):
    alice = await store.add_user("alice@example.com", "h")
    await sent_message(store, alice.id)
    assert await store.record_hits([hit(99, "open", 1), hit(1, "open", 2)]) == 1


async def test_shared_copies_and_scoping(store):
    alice = await store.add_user("alice@example.com", "h")
    mallory = await store.add_user("mallory@example.com", "h")
    mid = await sent_message(store, alice.id, shared=True)
    await store.record_hits([hit(1, "open", 50)])
    [report] = await store.message_reports(alice.id)
    assert [(r.address, r.shared, r.counts.opens) for r in report.recipients] == [
        ("bob@example.org", True, 1), ("carol@example.org", True, 1)]
    assert report.counts.opens == 1  # the message counts the copy once
    assert await store.message_reports(mallory.id) == []
    assert await store.message_report(mid, mallory.id) is None
    assert (await store.message_report(mid, None)).id == mid
    detail = await store.message_report(mid, alice.id)
    assert detail.events[0].recipient is None


async def test_listing_filters_tracked_and_pages_newest_first(store):
    alice = await store.add_user("alice@example.com", "h")
    for n in range(3):
        await sent_message(store, alice.id, queue_id=f"Q{n}")
    ids = [m.id for m in await store.message_reports(alice.id)]
    assert ids == [3, 2, 1]
    assert [m.id for m in await store.message_reports(alice.id, limit=1, offset=1)] == [2]
    assert await store.message_reports(alice.id, tracked=False) == []
    assert len(await store.message_reports(alice.id, tracked=True)) == 3


async def test_listing_pages_by_cursor_and_searches_subjects_and_recipients(store):
    alice = await store.add_user("alice@example.com", "h")
    for n, rcpt in enumerate(("bob@example.org", "carol@example.org", "dave@example.net", "Bob@Other.org")):
        await store.spool(NewMessage(
            queue_id=f"S{n}", user_id=alice.id, mail_from="alice@example.com", message_id=f"<S{n}@x>",
            subject=("100% Offer" if n == 1 else f"Note_{n}"), body=b"x", received_at=T0 + (n // 2),
            client_ip="192.0.2.1", recipients=(NewRecipient(rcpt, None),)))
    everything = [m.id for m in await store.message_reports(alice.id)]
    assert everything == [4, 3, 2, 1]  # two at each time: the id breaks the tie
    pages, before = [], None
    while page := await store.message_reports(alice.id, limit=3, before=before):
        pages.append([m.id for m in page])
        before = (page[-1].received_at, page[-1].id)
    assert pages == [[4, 3, 2], [1]]
    assert [m.id for m in await store.message_reports(alice.id, search="BOB@")] == [4, 1]  # any case
    assert [m.id for m in await store.message_reports(alice.id, search="100%")] == [2]
    assert [m.id for m in await store.message_reports(alice.id, search="e_1")] == []  # _ is no wildcard
    assert [m.id for m in await store.message_reports(alice.id, search="note_")] == [4, 3, 1]
    assert [m.id for m in await store.message_reports(alice.id, search="example.net", before=(T0 + 1, 4))] == [3]


async def test_notifications_unread_resume_and_mark_read_per_user(store):
    alice = await store.add_user("alice@example.com", "h")
    eve = await store.add_user("eve@example.com", "h")
    await sent_message(store, alice.id)
    assert await store.newest_notification(alice.id) == 0
    await store.record_hits([hit(1, "open", 10), hit(1, "click", 20, position=0), hit(2, "open", 30)])
    newest_first = await store.notifications(alice.id)
    assert [n.at for n in newest_first] == [T0 + 30, T0 + 20, T0 + 10]
    first, second, third = sorted(n.id for n in newest_first)
    assert await store.newest_notification(alice.id) == third
    assert [n.id for n in await store.notifications(alice.id, after_id=first)] == [second, third]  # oldest first
    assert await store.unread_notifications(alice.id) == 3
    assert await store.mark_notifications_read(eve.id, [first, second]) == 0  # not eve's
    assert await store.mark_notifications_read(alice.id, [first, first, 10**9]) == 1
    assert [n.id for n in await store.notifications(alice.id, unread_only=True)] == [third, second]
    assert await store.mark_notifications_read(alice.id, None) == 2
    assert await store.unread_notifications(alice.id) == 0 and await store.notifications(alice.id, unread_only=True) == []
    assert all(n.read for n in await store.notifications(alice.id))
