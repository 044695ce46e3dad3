"""What an outbox event and an attempt mean (relay/notify_rules.py, relay/hit_rules.py): no servers."""
from __future__ import annotations

import json

from relay.hit_rules import CopyFacts, plan_hits
from relay.notify_rules import DISABLE_AFTER, attempt_result, due_at
from relay.records import ClaimedDelivery, NewEvent, Webhook, WebhookSpec
from relay.webhook_client import PostResult

T0 = 1_800_000_000.0
HOOK = Webhook(7, 1, WebhookSpec("https://hooks.example/x"), T0)
FACTS = {1: CopyFacts(10, 1, "bob@example.org", "Numbers", None, "<m@x>")}


def hit(kind: str, at: float, cls: str = "human", position: int | None = None) -> NewEvent:
    return NewEvent(1, 10, kind, T0 + at, position, "203.0.113.0", "UA", cls)


def planned(spec: WebhookSpec, events: list[NewEvent], opened=()) -> list[tuple[str, str]]:
    hook = Webhook(7, 1, spec, T0)
    ids = iter(range(100))
    plan = plan_hits(events, FACTS, opened, {(10, 0): "https://example.com/a"}, {1: [hook]},
                     new_id=lambda: f"e{next(ids)}")
    return [(d.id, json.loads(d.payload)["type"]) for d in plan.deliveries]


def test_humans_only_and_first_only_choose_the_events():
    events = [hit("open", 1, "prefetch"), hit("open", 2), hit("open", 3), hit("click", 4, position=0)]
    spec = WebhookSpec("https://hooks.example/x")
    assert planned(spec, events) == [("e0", "message.opened"), ("e1", "link.clicked")]
    assert [t for _, t in planned(WebhookSpec("https://h.example/", humans_only=False), events)] == [
        "message.opened", "message.opened", "link.clicked"]  # the prefetch's first open, then the human's
    assert len(planned(WebhookSpec("https://h.example/", first_only=False), events)) == 3
    assert planned(spec, [hit("open", 5)], opened=[(1, "human")]) == []  # opened in an earlier batch
    assert planned(WebhookSpec("https://h.example/", enabled=False), events) == []


def test_a_digest_is_due_at_the_end_of_its_period():
    spec = WebhookSpec("https://h.example/", digest=900.0)
    assert due_at(spec, 1800.0) == 2700.0 and due_at(spec, 2699.9) == 2700.0
    assert due_at(WebhookSpec("https://h.example/"), 1234.5) == 1234.5


def claimed(attempts: int, failing_since: float | None = None, created: float = T0) -> ClaimedDelivery:
    return ClaimedDelivery("e1", Webhook(7, 1, HOOK.spec, T0, failing_since), "{}", attempts, created)


def test_failures_retry_then_give_up_or_disable():
    fail = PostResult(503, 0.2, "HTTP 503")
    first = attempt_result(claimed(0), fail, T0 + 5, [10.0, 60.0], 86400)
    assert (first.status, first.due_at, first.failing_since, first.notice) == ("queued", T0 + 15, T0 + 5, None)
    later = attempt_result(claimed(5, T0), fail, T0 + 100, [10.0, 60.0], 86400)
    assert later.due_at == T0 + 160  # the last interval repeats
    old = attempt_result(claimed(3, T0 + 80_000, created=T0), fail, T0 + 86_390, [10.0, 60.0], 86400)
    assert old.status == "failed" and not old.disable and "given up" in old.notice.text
    day = attempt_result(claimed(30, T0), fail, T0 + DISABLE_AFTER, [10.0], 10**9)
    assert day.status == "failed" and day.disable and "failed for a day" in day.notice.text
    gone = attempt_result(claimed(0), PostResult(410, 0.1, "HTTP 410"), T0 + 1, [10.0], 86400)
    assert gone.disable and "410" in gone.notice.text
    ok = attempt_result(claimed(2, T0), PostResult(204, 0.1, ""), T0 + 30, [10.0], 86400)
    assert (ok.status, ok.failing_since, ok.disable) == ("sent", None, False)
