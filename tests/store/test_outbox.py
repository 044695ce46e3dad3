"""Store contract for webhooks and their outbox: hits and the deliveries they cause commit
together, claims take a lease, an attempt's result is written at once."""
from __future__ import annotations

import json

from relay.notify_rules import attempt_result
from relay.records import WebhookSpec
from relay.webhook_client import PostResult
from tests.store.test_hit_store import T0, hit, sent_message


async def test_human_first_open_and_clicks_go_to_the_outbox_with_the_hits(store):
    alice = await store.add_user("alice@example.com", "h")
    hook = await store.add_webhook(alice.id, WebhookSpec("https://hooks.example/x"), "s3cret", T0)
    await store.add_webhook(alice.id, WebhookSpec("https://hooks.example/off", enabled=False), "s", T0)
    await sent_message(store, alice.id)
    await store.record_hits([
        hit(1, "open", 10, "prefetch"),  # a machine: humans_only
        hit(1, "open", 20), hit(1, "open", 30),  # first_only: the second human open is not sent
        hit(1, "click", 40, position=1),
    ])
    claimed = await store.claim_deliveries("n1", T0 + 100, 10, 60)
    assert [json.loads(d.payload)["type"] for d in claimed] == ["message.opened", "link.clicked"]
    assert {d.webhook.id for d in claimed} == {hook.id} and claimed[0].webhook.secret == "s3cret"
    opened = json.loads(claimed[0].payload)
    assert (opened["recipient"], opened["subject"], opened["hit_class"]) == ("bob@example.org", "Numbers", "human")
    assert json.loads(claimed[1].payload)["url"] == "https://example.com/b"
    assert await store.claim_deliveries("n2", T0 + 100, 10, 60) == []  # leased to n1
    assert len(await store.claim_deliveries("n2", T0 + 161, 10, 60)) == 2  # the lease ran out


async def test_a_failed_attempt_is_retried_with_the_same_id_then_sent(store):
    alice = await store.add_user("alice@example.com", "h")
    await store.add_webhook(alice.id, WebhookSpec("https://hooks.example/x", events=("open",)), "s", T0)
    await sent_message(store, alice.id)
    await store.record_hits([hit(1, "open", 10)])
    [d] = await store.claim_deliveries("n1", T0 + 10, 10, 60)
    await store.finish_delivery(attempt_result(d, PostResult(500, 0.01, "HTTP 500"), T0 + 11, [10.0], 86400))
    assert await store.claim_deliveries("n1", T0 + 20, 10, 60) == []  # not due before its retry
    [again] = await store.claim_deliveries("n1", T0 + 21, 10, 60)
    assert (again.id, again.attempts, again.webhook.failing_since) == (d.id, 1, T0 + 11)
    await store.finish_delivery(attempt_result(again, PostResult(200, 0.01, ""), T0 + 22, [10.0], 86400))
    assert await store.claim_deliveries("n1", T0 + 10_000, 10, 60) == []
    [report] = await store.deliveries(d.webhook.id)
    assert (report.id, report.status, [a.status_code for a in report.tries]) == (d.id, "sent", [500, 200])
    assert (await store.webhook(d.webhook.id, alice.id)).failing_since is None


async def test_410_disables_the_webhook_and_tells_its_owner(store):
    alice = await store.add_user("alice@example.com", "h")
    hook = await store.add_webhook(alice.id, WebhookSpec("https://hooks.example/x"), "s", T0)
    await sent_message(store, alice.id)
    await store.record_hits([hit(1, "open", 10), hit(2, "open", 11)])
    d, _ = await store.claim_deliveries("n1", T0 + 20, 1, 60) + [None]
    await store.finish_delivery(attempt_result(d, PostResult(410, 0.01, "HTTP 410"), T0 + 21, [10.0], 86400))
    assert not (await store.webhook(hook.id, alice.id)).spec.enabled
    assert sorted(r.status for r in await store.deliveries(hook.id)) == ["failed", "failed"]
    assert [n.type for n in await store.notifications(alice.id)][0] == "webhook"


async def test_webhooks_are_scoped_to_their_owner(store):
    alice = await store.add_user("alice@example.com", "h")
    mallory = await store.add_user("mallory@example.com", "h")
    hook = await store.add_webhook(alice.id, WebhookSpec("https://hooks.example/x", kind="slack"), "", T0)
    assert await store.webhook(hook.id, mallory.id) is None
    assert await store.webhooks(mallory.id) == []
    assert not await store.update_webhook(hook.id, mallory.id, WebhookSpec("https://evil.example/"))
    assert not await store.delete_webhook(hook.id, mallory.id)
    assert await store.update_webhook(hook.id, alice.id, WebhookSpec("https://hooks.example/y", kind="slack",
                                                                     events=("click",), digest=900.0))
    [mine] = await store.webhooks(alice.id)
    assert (mine.spec.url, mine.spec.events, mine.spec.digest) == ("https://hooks.example/y", ("click",), 900.0)
    assert await store.delete_webhook(hook.id, alice.id)
    assert await store.webhooks(None) == []


async def test_unopened_follow_ups_are_made_once_and_not_for_opened_or_do_not_track_copies(store):
    alice = await store.add_user("alice@example.com", "h")
    hook = await store.add_webhook(alice.id, WebhookSpec("https://hooks.example/x", events=("unopened",),
                                                         unopened_after=3600.0), "s", T0)
    await sent_message(store, alice.id, rcpts=("bob@example.org", "carol@example.org", "dave@example.net"))
    await store.record_hits([hit(2, "open", 10)])  # carol opened
    await store.privacy_add("dnt", "@example.net")  # dave asked not to be tracked since
    assert await store.record_unopened(T0 + 3600, 10) == 0  # not yet: delivered at T0 + 1
    assert await store.record_unopened(T0 + 3602, 10) == 1
    assert await store.record_unopened(T0 + 9999, 10) == 0  # made once
    [d] = await store.claim_deliveries("n1", T0 + 9999, 10, 60)
    assert d.id == f"evt_unopened_{hook.id}_1" and json.loads(d.payload)["recipient"] == "bob@example.org"
    assert [n.type for n in await store.notifications(alice.id)] == ["unopened", "open"]
