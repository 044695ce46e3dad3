"""Store contract: users, passwords, tokens, privacy lists, sender addresses, panel sessions."""
from __future__ import annotations

import pytest

from relay.errors import StoreConflict


async def test_users_passwords_and_deletion_cascade(store):
    bob = await store.add_user("bob@example.com", "h1")
    alice = await store.add_user("alice@example.com", "h1", True)
    assert [(u.email, u.is_admin) for u in await store.users()] == [("alice@example.com", True),
                                                                    ("bob@example.com", False)]
    assert await store.set_password("BOB@example.com", "h2")
    assert (await store.user_by_email("bob@example.com")).password_hash == "h2"
    assert not await store.set_password("nobody@example.com", "h2")
    await store.add_api_token(bob.id, "bobtok")
    with pytest.raises(StoreConflict):
        await store.add_api_token(alice.id, "bobtok")
    assert await store.delete_user("bob@example.com")
    assert await store.user_by_api_token("bobtok") is None  # the token went with its user
    assert not await store.delete_user("bob@example.com")
    assert await store.user_by_email("bob@example.com") is None


async def test_privacy_lists(store):
    assert await store.privacy_add("dnt", "Bob@Example.org")
    assert not await store.privacy_add("dnt", "bob@example.org")  # already there
    assert await store.privacy_add("dnt", "@secret.example")
    assert await store.privacy_add("consent", "carol@example.org")
    assert await store.privacy_list("dnt") == ["@secret.example", "bob@example.org"]
    assert await store.privacy_list("consent") == ["carol@example.org"]
    assert await store.privacy_del("dnt", "BOB@example.org")
    assert not await store.privacy_del("dnt", "bob@example.org")
    assert await store.privacy_list("dnt") == ["@secret.example"]


async def test_sender_ips_are_recent_only(store):
    alice = await store.add_user("alice@example.com", "h")
    await store.note_sender_ip(alice.id, "192.0.2.1", 100.0)
    await store.note_sender_ip(alice.id, "192.0.2.2", 200.0)
    await store.note_sender_ip(alice.id, "192.0.2.1", 300.0)  # seen again: newer
    assert await store.recent_sender_ips(alice.id, 150.0) == {"192.0.2.1", "192.0.2.2"}
    assert await store.recent_sender_ips(alice.id, 250.0) == {"192.0.2.1"}
    assert await store.recent_sender_ips(alice.id + 1, 0.0) == frozenset()


async def test_panel_sessions(store):
    alice = await store.add_user("alice@example.com", "secret-hash", True)
    await store.add_panel_session("s1", alice.id, 100.0, "192.0.2.1")
    await store.add_panel_session("s2", alice.id, 100.0, "192.0.2.1")
    session = await store.panel_session("s1")
    assert (session.user.email, session.user.is_admin, session.created_at, session.last_seen) == (
        "alice@example.com", True, 100.0, 100.0)
    assert session.user.password_hash == ""  # a session carries no password hash
    await store.touch_panel_session("s1", 500.0)
    await store.touch_panel_session("s1", 400.0)  # an older touch arriving late does not go back
    assert (await store.panel_session("s1")).last_seen == 500.0
    assert await store.delete_stale_panel_sessions(seen_before=300.0, created_before=0.0) == 1  # s2
    assert await store.panel_session("s2") is None
    await store.delete_panel_session("s1")
    assert await store.panel_session("s1") is None


async def test_a_new_password_ends_the_users_panel_sessions(store):
    alice = await store.add_user("alice@example.com", "h")
    bob = await store.add_user("bob@example.com", "h")
    await store.add_panel_session("a1", alice.id, 100.0, "192.0.2.1")
    await store.add_panel_session("b1", bob.id, 100.0, "192.0.2.2")
    assert await store.set_password("Alice@Example.com", "new-hash")
    assert await store.panel_session("a1") is None and await store.panel_session("b1") is not None
    assert (await store.user_by_email("alice@example.com")).password_hash == "new-hash"


async def test_api_tokens_are_listed_used_and_deleted_per_user(store):
    alice = await store.add_user("alice@example.com", "h")
    bob = await store.add_user("bob@example.com", "h")
    made = await store.add_api_token(alice.id, "hash-a", "laptop")
    await store.add_api_token(bob.id, "hash-b", "")
    [listed] = await store.api_tokens(alice.id)
    assert listed == made and listed.name == "laptop" and listed.last_used_at is None and listed.created_at > 0
    await store.touch_api_token("hash-a", 1234.5)
    assert (await store.api_tokens(alice.id))[0].last_used_at == 1234.5
    assert not await store.delete_api_token(bob.id, made.id)  # not bob's
    assert (await store.user_by_api_token("hash-a")).id == alice.id
    assert await store.delete_api_token(alice.id, made.id)
    assert await store.user_by_api_token("hash-a") is None and await store.api_tokens(alice.id) == []
    assert len(await store.api_tokens(bob.id)) == 1



async def test_a_disabled_user_has_no_token_and_no_session_and_keeps_settings(store):
    from relay.records import UserChanges

    alice = await store.add_user("alice@example.com", "h")
    await store.add_api_token(alice.id, "digest")
    await store.add_panel_session("sess", alice.id, 1.0, "192.0.2.1")
    assert await store.update_user("Alice@Example.com", UserChanges(language="hu", timezone="Europe/Budapest"))
    assert (await store.panel_session("sess")).user.language == "hu"
    assert await store.update_user("alice@example.com", UserChanges(disabled=True, is_admin=True))
    user = await store.user_by_email("alice@example.com")
    assert (user.disabled, user.is_admin, user.language, user.timezone) == (True, True, "hu", "Europe/Budapest")
    assert await store.user_by_api_token("digest") is None and await store.panel_session("sess") is None
    assert not await store.update_user("nobody@example.com", UserChanges(disabled=True))
    await store.update_user("alice@example.com", UserChanges(disabled=False))
    assert (await store.user_by_api_token("digest")).email == "alice@example.com"
