"""The meaning of a batch of hits (relay/hit_rules.py), without a store."""
from __future__ import annotations

from relay.hit_rules import CopyFacts, notification_text, notify_wanted, open_questions, plan_hits
from relay.records import NewEvent

BOB = CopyFacts(message_id=7, user_id=1, recipient="bob@example.org", subject="Numbers", notify=True)
LINKS = {(7, 0): "https://example.com/a", (7, 1): "https://example.com/b"}


def hit(kind: str, at: float, cls: str = "human", position: int | None = None, copy_id: int = 1) -> NewEvent:
    return NewEvent(copy_id, 0, kind, at, position, "203.0.113.0", "UA", cls)


def test_a_click_implies_one_open_per_class_and_humans_are_notified_once_per_open():
    plan = plan_hits([hit("click", 5, "scanner", 0), hit("click", 6, "scanner", 1), hit("click", 100, "human", 1),
                      hit("open", 200), hit("open", 300)], {1: BOB}, set(), LINKS)
    assert plan.stored == 5
    assert [(e.type, e.cls, e.implied, e.at, e.message_id) for e in plan.events] == [
        ("open", "scanner", True, 5, 7), ("click", "scanner", False, 5, 7), ("click", "scanner", False, 6, 7),
        ("open", "human", True, 100, 7), ("click", "human", False, 100, 7),
        ("open", "human", False, 200, 7), ("open", "human", False, 300, 7)]
    assert [(n.type, n.url, n.at, n.user_id, n.message_id) for n in plan.notifications] == [
        ("open", None, 100, 1, 7), ("click", "https://example.com/b", 100, 1, 7)]
    assert plan.notifications[0].text == "bob@example.org opened \u201cNumbers\u201d"


def test_opens_stored_before_the_batch_count():
    plan = plan_hits([hit("click", 5, position=0), hit("open", 6)], {1: BOB}, {(1, "human")}, LINKS)
    assert [(e.type, e.implied) for e in plan.events] == [("click", False), ("open", False)]
    assert [n.type for n in plan.notifications] == ["click"]


def test_no_notifications_for_machines_or_when_the_owner_said_no():
    quiet = CopyFacts(7, 1, "bob@example.org", "s", notify=False)
    assert plan_hits([hit("open", 1), hit("click", 2, position=0)], {1: quiet}, set(), LINKS).notifications == ()
    machines = [hit("open", 1, "proxy"), hit("open", 2, "prefetch"), hit("click", 3, "scanner", 0)]
    assert plan_hits(machines, {1: BOB}, set(), LINKS).notifications == ()


def test_hits_on_erased_copies_are_dropped():
    plan = plan_hits([hit("open", 1, copy_id=99), hit("open", 2)], {1: BOB}, set(), LINKS)
    assert plan.stored == 1 and [e.copy_id for e in plan.events] == [1]


def test_notification_wording_and_the_notify_default():
    assert notification_text("click", None, "", "https://x.example/") == (
        "a recipient clicked https://x.example/ in \u201c(no subject)\u201d")
    assert notify_wanted(CopyFacts(7, 1, None, "s", notify=None)) is True  # no policy: notifications on
    assert notify_wanted(CopyFacts(7, 1, None, "s", notify=False)) is False
    assert notify_wanted(CopyFacts(7, None, None, "s", notify=True)) is False  # a DSN has no owner


def test_the_store_is_asked_only_about_the_batch_s_copies_and_classes():
    batch = [hit("click", 1, "scanner", 0), hit("open", 2, "proxy", copy_id=2), hit("open", 3)]
    assert open_questions(batch) == [(1, "human"), (1, "scanner"), (2, "human"), (2, "proxy")]
