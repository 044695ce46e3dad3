"""Mail for the store tests: a tracked message as intake spools it, and its delivery recorded
as the delivery worker records it (claim, links, results, the outcome rolled up from them)."""
from __future__ import annotations

from typing import Any, Sequence

from relay.records import ClaimedMessage, NewCopy, NewMessage, NewRecipient, RecipientResult
from relay.status import message_outcome
from relay.store import Store


def tracked_message(queue_id: str, user_id: int, rcpts: Sequence[str], *, at: float, shared: bool = False,
                    subject: str = "Numbers", body: bytes = b"Subject: s\r\n\r\nhi\r\n") -> NewMessage:
    """Opens and clicks tracked: a copy per recipient (tokens tok-Q-0, tok-Q-1, ...), or one
    shared copy (tok-Q-all)."""
    if shared:
        copies: tuple[NewCopy, ...] = (NewCopy(f"tok-{queue_id}-all", None, True, True),)
        recipients = tuple(NewRecipient(r, 0) for r in rcpts)
    else:
        copies = tuple(NewCopy(f"tok-{queue_id}-{i}", r, True, True) for i, r in enumerate(rcpts))
        recipients = tuple(NewRecipient(r, i) for i, r in enumerate(rcpts))
    return NewMessage(
        queue_id=queue_id, user_id=user_id, mail_from="alice@example.com", message_id=f"<{queue_id}@x>",
        subject=subject, body=body, received_at=at, client_ip="192.0.2.1",
        recipients=recipients, copies=copies, track_opens=True, track_clicks=True)


async def finish(store: Store, claimed: ClaimedMessage, results: list[RecipientResult], now: float,
                 **kwargs: Any) -> str:
    """store.finish as the delivery worker calls it."""
    return await store.finish(claimed.id, results, message_outcome(claimed.settled, results, now), now, **kwargs)


async def deliver(store: Store, message_id: int, links: Sequence[tuple[int, str]], at: float) -> None:
    """Claimed at `at`, its links saved, sent to every recipient at at + 1."""
    [claimed] = [m for m in await store.claim("w", at, 10, 60) if m.id == message_id]
    await store.save_links(message_id, links)
    await finish(store, claimed, [RecipientResult(r.id, "sent") for r in claimed.recipients], at + 1)
