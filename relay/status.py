"""A message's delivery status from its recipients' (pure)."""
from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

from relay.records import MessageOutcome, RecipientResult

FINAL = ("sent", "bounced")
PENDING = ("queued", "deferred")


def pending_count(counts: Mapping[str, int]) -> int:
    """counts: recipients per status."""
    return sum(counts.get(s, 0) for s in PENDING)


def roll_up(counts: Mapping[str, int]) -> str:
    """deferred while any recipient waits; then bounced, partial (some sent) or sent."""
    if pending_count(counts):
        return "deferred"
    if counts.get("bounced"):
        return "partial" if counts.get("sent") else "bounced"
    return "sent"


def next_attempt_at(results: Sequence[RecipientResult], now: float) -> float:
    """The earliest retry any deferred recipient asked for; now when none did."""
    return min((r.next_attempt_at for r in results if r.status == "deferred" and r.next_attempt_at), default=now)


def done_at(status: str, now: float) -> float | None:
    return now if status in FINAL else None


def message_outcome(settled: Sequence[str], results: Sequence[RecipientResult], now: float) -> MessageOutcome:
    """settled: the statuses of the recipients that were no longer pending when the message was
    claimed; results: one per recipient that was. Together they are all of its recipients: the
    message's lease keeps every other worker off them meanwhile."""
    counts = Counter(settled)
    counts.update(r.status for r in results)
    return MessageOutcome(roll_up(counts), next_attempt_at(results, now), counts["sent"] > 0,
                          erase_body=not pending_count(counts))
