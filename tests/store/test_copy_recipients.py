"""Store contract: the addresses one copy went to (the opt-out page of a shared copy checks them)."""
from __future__ import annotations

from relay.records import NewCopy, NewMessage, NewRecipient
from relay.store import Store

T0 = 1_800_000_000.0


async def spool(store: Store, user_id: int, queue_id: str, copies: tuple[NewCopy, ...],
                recipients: tuple[NewRecipient, ...]) -> None:
    await store.spool(NewMessage(
        queue_id=queue_id, user_id=user_id, mail_from="alice@example.com", message_id=f"<{queue_id}@x>",
        subject="Numbers", body=b"Subject: Numbers\r\n\r\nhi\r\n", received_at=T0, client_ip="192.0.2.1",
        recipients=recipients, copies=copies, track_opens=True, track_clicks=True))


async def test_copy_recipients_are_the_copys_own_in_order(store):
    alice = await store.add_user("alice@example.com", "h")
    await spool(store, alice.id, "Q1",
                (NewCopy("tok-bob", "bob@example.org", True, True), NewCopy("tok-shared", None, True, True)),
                (NewRecipient("Bob@Example.org", 0), NewRecipient("carol@example.org", 1),
                 NewRecipient("erin@example.org", None), NewRecipient("dave@example.org", 1)))
    # another message's shared copy: its recipients are not the first one's
    await spool(store, alice.id, "Q2", (NewCopy("tok-other", None, True, True),),
                (NewRecipient("mallory@example.org", 0), NewRecipient("carol@example.org", 0)))
    bob, shared, other = [(await store.copy_target(t)).copy_id for t in ("tok-bob", "tok-shared", "tok-other")]
    assert await store.copy_recipients(bob) == ["Bob@Example.org"]  # as written in the envelope
    assert await store.copy_recipients(shared) == ["carol@example.org", "dave@example.org"]
    assert await store.copy_recipients(other) == ["mallory@example.org", "carol@example.org"]
    assert await store.copy_recipients(10**9) == []
