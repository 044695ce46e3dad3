"""What a batch of hits means (pure): the events to store, implied opens, in-app notifications.

A click on a copy with no open of the click's class yet also records an *implied* open
(same time, IP, user agent and class), so "clicked but images were blocked" still reads
as opened. A copy's first human open and every human click make an in-app notification
when the owner's policy has ``notify`` on (the default). The owner's enabled webhooks get
an outbox row for each event they ask for (relay/notify_rules.py decides which), written in
the same transaction as the hits. Store engines look the facts up, call plan_hits, and insert
what it returns.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Callable, Collection, Mapping, Sequence

from relay.notify_rules import due_at, event_payload, wanted
from relay.records import NewDelivery, NewEvent, NewNotification, Webhook


@dataclass(frozen=True)
class CopyFacts:
    """What the store knows about the copy a hit is for."""

    message_id: int
    user_id: int | None
    recipient: str | None
    subject: str
    notify: bool | None  # the owner's policy setting; None: the owner has no policy
    header_id: str = ""  # the mail's Message-ID, for webhook payloads


@dataclass(frozen=True)
class HitPlan:
    events: tuple[NewEvent, ...]  # the hits and their implied opens, in order
    notifications: tuple[NewNotification, ...]
    stored: int  # hits kept (hits on erased copies are dropped)
    deliveries: tuple[NewDelivery, ...] = ()  # webhook outbox rows, written with the hits


def notify_wanted(facts: CopyFacts) -> bool:
    """Mail without an owner (a DSN) notifies nobody; a user without a policy gets
    notifications (UserPolicy.notify defaults on)."""
    return facts.user_id is not None and (facts.notify is None or bool(facts.notify))


def notification_text(kind: str, recipient: str | None, subject: str, url: str | None) -> str:
    who = recipient or "a recipient"
    subject = subject or "(no subject)"
    if kind == "open":
        return f"{who} opened \u201c{subject}\u201d"
    return f"{who} clicked {url} in \u201c{subject}\u201d"


def open_questions(events: Sequence[NewEvent]) -> list[tuple[int, str]]:
    """The (copy id, class) pairs plan_hits asks "was there an open before?" about: the store
    answers only these (an EXISTS each) instead of reading every open of a hot copy."""
    return sorted({(e.copy_id, e.cls) for e in events} | {(e.copy_id, "human") for e in events})


def new_event_id() -> str:
    return "evt_" + uuid.uuid4().hex


def plan_hits(events: Sequence[NewEvent], copies: Mapping[int, CopyFacts],
              opened: Collection[tuple[int, str]], links: Mapping[tuple[int, int], str],
              webhooks: Mapping[int, Sequence[Webhook]] | None = None,
              new_id: Callable[[], str] = new_event_id) -> HitPlan:
    """events: the batch; copies: facts per copy id (a missing copy was erased); opened: those
    of open_questions(events) with an open stored before this batch; links: (message id,
    position) -> url; webhooks: the enabled webhooks per user id (their events go to the outbox)."""
    seen_open = set(opened)
    rows: list[NewEvent] = []
    notices: list[NewNotification] = []
    deliveries: list[NewDelivery] = []
    stored = 0

    def notify_webhooks(e: NewEvent, facts: CopyFacts, kind: str, url: str | None, first_open: bool) -> None:
        hooks = (webhooks or {}).get(facts.user_id, ()) if facts.user_id is not None else ()
        for hook in hooks:
            if wanted(hook.spec, kind, e.cls, first_open):
                payload = event_payload(kind, e.at, facts.message_id, facts.header_id, facts.subject,
                                        facts.recipient, url, e.cls)
                deliveries.append(NewDelivery(new_id(), hook.id, json.dumps(payload), due_at(hook.spec, e.at), e.at))

    def record_open(e: NewEvent, facts: CopyFacts, implied: bool) -> None:
        first = (e.copy_id, e.cls) not in seen_open
        first_human = e.cls == "human" and first
        rows.append(NewEvent(e.copy_id, facts.message_id, "open", e.at, None, e.ip, e.user_agent, e.cls, implied))
        seen_open.add((e.copy_id, e.cls))
        if first_human and notify_wanted(facts):
            notices.append(_notice(facts, "open", e.at, None))
        notify_webhooks(e, facts, "open", None, first)

    for e in events:
        facts = copies.get(e.copy_id)
        if facts is None:  # the copy was erased (purge, erase) after the hit arrived
            continue
        stored += 1
        if e.type == "open":
            record_open(e, facts, e.implied)
            continue
        if (e.copy_id, e.cls) not in seen_open:
            record_open(e, facts, True)
        rows.append(NewEvent(e.copy_id, facts.message_id, e.type, e.at, e.position, e.ip, e.user_agent, e.cls,
                             e.implied))
        url = links.get((facts.message_id, e.position)) if e.position is not None else None
        if e.cls == "human" and notify_wanted(facts):
            notices.append(_notice(facts, "click", e.at, url))
        notify_webhooks(e, facts, "click", url, False)
    return HitPlan(tuple(rows), tuple(notices), stored, tuple(deliveries))


def _notice(facts: CopyFacts, kind: str, at: float, url: str | None) -> NewNotification:
    return NewNotification(facts.user_id, facts.message_id, kind, facts.recipient, url,
                           notification_text(kind, facts.recipient, facts.subject, url), at)
