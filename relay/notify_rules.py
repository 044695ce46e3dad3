"""What the webhook outbox means (pure, no I/O): which events a webhook wants, when a delivery
is due, and what one attempt's answer changes (retry, give up, disable the webhook).

A delivery's id is its event id: it is made once, when the hit is recorded, and every retry
sends it again, so a receiver can drop duplicates (DESIGN invariant 8).
"""
from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Sequence

from relay.notify_payloads import NoticeEvent
from relay.records import Attempt, ClaimedDelivery, DeliveryResult, NewDelivery, NewNotification, Webhook, WebhookSpec

if TYPE_CHECKING:  # the hits path imports these rules: no HTTP client for it
    from relay.webhook_client import PostResult

EVENT_TYPES = {"open": "message.opened", "click": "link.clicked", "unopened": "message.unopened"}
GONE = 410  # the receiver says the webhook is gone for good: disable it
DISABLE_AFTER = 86400.0  # a webhook failing this long is disabled and its owner told


def rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def wanted(spec: WebhookSpec, kind: str, cls: str, first_open: bool) -> bool:
    """kind: "open" or "click"; first_open: this open is the copy's first of its class."""
    if not spec.enabled or kind not in spec.events:
        return False
    if spec.humans_only and cls != "human":
        return False
    return not (kind == "open" and spec.first_only and not first_open)


def due_at(spec: WebhookSpec, at: float) -> float:
    """At once, or with a digest at the end of the period the event fell in."""
    if spec.digest <= 0:
        return at
    return (math.floor(at / spec.digest) + 1) * spec.digest


def event_payload(kind: str, at: float, message_id: int, header_id: str, subject: str,
                  recipient: str | None, url: str | None, cls: str) -> dict[str, object]:
    """The stored event (NoticeEvent's fields without the id and panel link)."""
    return {"type": EVENT_TYPES[kind], "occurred_at": rfc3339(at), "message_id": str(message_id),
            "message_header_id": header_id, "subject": subject, "recipient": recipient or "",
            "url": url or "", "hit_class": cls}


def sample_event(now: float, panel_url: str = "") -> NoticeEvent:
    """What `webhook test` sends: a made-up open, with an id of its own."""
    return NoticeEvent(id="evt_test_" + uuid.uuid4().hex, type="message.opened", occurred_at=rfc3339(now),
                       message_id="0", message_header_id="<test@trackrelay>", subject="Test from trackrelay",
                       recipient="recipient@example.com", hit_class="human", panel_url=panel_url)


def notice_event(delivery_id: str, payload: str, panel_url: str) -> NoticeEvent:
    fields = json.loads(payload)
    link = f"{panel_url.rstrip('/')}/messages/{fields['message_id']}" if panel_url else ""
    return NoticeEvent(id=delivery_id, panel_url=link, **fields)


def next_try(attempts: int, intervals: Sequence[float]) -> float:
    """The wait after the attempts-th failed attempt (the last interval repeats)."""
    return intervals[min(attempts, len(intervals)) - 1]


def attempt_result(d: ClaimedDelivery, result: PostResult, now: float, intervals: Sequence[float],
                   max_age: float) -> DeliveryResult:
    attempt = Attempt(d.id, now, result.status, result.latency, result.error)
    hook = d.webhook
    if result.delivered:
        return DeliveryResult(attempt, "sent", now, hook.id, None)
    failing_since = hook.failing_since if hook.failing_since is not None else now
    gone = result.status == GONE
    disable = gone or now - failing_since >= DISABLE_AFTER
    retry_at = now + next_try(d.attempts + 1, intervals)
    if disable:  # its queued deliveries are failed with it
        return DeliveryResult(attempt, "failed", now, hook.id, failing_since, True,
                              _disabled_notice(hook, result, now))
    if retry_at - d.created_at > max_age:
        return DeliveryResult(attempt, "failed", now, hook.id, failing_since, False, _notice(
            hook, f"a webhook notification to {hook.spec.url} was given up: {result.error or 'no answer'}", now))
    return DeliveryResult(attempt, "queued", retry_at, hook.id, failing_since)


def _disabled_notice(hook: Webhook, result: PostResult, now: float) -> NewNotification:
    why = "it answered 410 Gone" if result.status == GONE else "it has failed for a day"
    return _notice(hook, f"the webhook to {hook.spec.url} was disabled: {why}", now)


def _notice(hook: Webhook, text: str, now: float) -> NewNotification:
    return NewNotification(hook.user_id, None, "webhook", None, hook.spec.url, text, now)


# --- unopened follow-ups: found by a periodic, bounded query in the notify role ---

@dataclass(frozen=True)
class UnopenedCopy:
    """A delivered, open-tracked copy with no human open, past its webhook's unopened_after."""

    webhook: Webhook
    copy_id: int
    message_id: int
    header_id: str
    subject: str
    recipient: str | None
    delivered_at: float


def unopened_id(webhook_id: int, copy_id: int) -> str:
    """Fixed per webhook and copy: the outbox row itself records that the follow-up was made."""
    return f"evt_unopened_{webhook_id}_{copy_id}"


def not_tracked_now(recipient: str | None, do_not_track: frozenset[str]) -> bool:
    """The recipient went on the do-not-track list (address or @domain) after the mail left."""
    if recipient is None:
        return False
    address = recipient.lower()
    return address in do_not_track or "@" + address.rpartition("@")[2] in do_not_track


def plan_unopened(copies: Sequence[UnopenedCopy], do_not_track: frozenset[str],
                  now: float) -> list[tuple[NewDelivery, NewNotification]]:
    """One message.unopened delivery (and an in-app notification) per copy and webhook."""
    planned = []
    for c in copies:
        if not_tracked_now(c.recipient, do_not_track):
            continue
        payload = event_payload("unopened", now, c.message_id, c.header_id, c.subject, c.recipient, None, "")
        delivery = NewDelivery(unopened_id(c.webhook.id, c.copy_id), c.webhook.id, json.dumps(payload),
                               due_at(c.webhook.spec, now), now)
        text = (f"{c.recipient or 'a recipient'} has not opened \u201c{c.subject or '(no subject)'}\u201d"
                f" since {rfc3339(c.delivered_at)}")
        planned.append((delivery, NewNotification(c.webhook.user_id, c.message_id, "unopened", c.recipient, None,
                                                  text, now)))
    return planned
