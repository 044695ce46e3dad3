"""trackrelay migrate-store: a SQLite store moved into PostgreSQL keeps everything the product shows."""
from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from relay.control import Choice
from relay.policy import UserPolicy
from relay.notify_rules import attempt_result
from relay.records import NewCopy, NewEvent, NewMessage, NewRecipient, RecipientResult, WebhookSpec
from relay.webhook_client import PostResult
from relay.store.postgres import PostgresStore
from relay.store.sqlite import SqliteStore
from tests.store.mail_helpers import finish

TRACKRELAY = str(Path(sys.executable).parent / "trackrelay")
T0 = 1_800_000_000.0


def mail(queue_id: str, user_id: int, at: float) -> NewMessage:
    return NewMessage(
        queue_id=queue_id, user_id=user_id, mail_from="alice@example.com", message_id=f"<{queue_id}@x>",
        subject=f"subject {queue_id}", body=b"Subject: s\r\n\r\nbody " + queue_id.encode(), received_at=at,
        client_ip="192.0.2.7", recipients=(NewRecipient("bob@example.org", 0), NewRecipient("carol@example.org", None)),
        copies=(NewCopy(f"tok-{queue_id}", "bob@example.org", True, True),), track_opens=True, track_clicks=True)


async def filled_sqlite(path: Path) -> SqliteStore:
    store = SqliteStore(str(path))
    await store.open()
    alice = await store.add_user("alice@example.com", "hash-a", True)
    await store.add_user("bob@example.com", "hash-b")
    await store.add_api_token(alice.id, "tokhash")
    await store.set_policy(alice.id, UserPolicy(mode="always", clicks=False, sticky_choice=Choice(True, None)))
    await store.privacy_add("dnt", "@secret.example")
    await store.privacy_add("consent", "carol@example.org")
    sent = await store.spool(mail("SENT", alice.id, T0))
    [m] = await store.claim("w", T0, 1, 60)
    await store.save_links(sent, [(0, "https://example.com/a")])
    results = [RecipientResult(r.id, "sent") for r in m.recipients]
    await finish(store, m, results, T0 + 1)
    await store.add_webhook(alice.id, WebhookSpec("https://hooks.example/x"), "whsec", T0)
    copy = await store.copy_target("tok-SENT")
    await store.record_hits([NewEvent(copy.copy_id, sent, "click", T0 + 60, 0, "203.0.113.0", "UA", "human")])
    [tried, _] = await store.claim_deliveries("n", T0 + 60, 1, 60) + [None]  # one of the two; the other waits
    await store.finish_delivery(attempt_result(tried, PostResult(500, 0.1, "HTTP 500"), T0 + 61, [10.0], 86400))
    await store.spool(mail("WAITING", alice.id, T0 + 10))  # still queued: its body moves too
    return store


def migrate(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    return subprocess.run([TRACKRELAY, "migrate-store", *args], env=env, capture_output=True, text=True, timeout=120)


async def test_sqlite_to_postgresql_keeps_users_policies_mail_and_events(tmp_path, pg_url):
    source = await filled_sqlite(tmp_path / "old.db")
    before = await source.message_reports(None)
    before_detail = await source.message_report(before[-1].id, None)
    await source.close()

    out = migrate("--from", f"sqlite:///{tmp_path}/old.db", "--to", pg_url)
    assert out.returncode == 0, out.stderr
    [line] = out.stdout.splitlines()  # not on a terminal: one line, no progress
    assert line.startswith("copied 2 users, 1 api tokens, 1 policies, 1 do not track, 1 consent, 2 messages,"
                           " 2 copies, 1 link lists, 2 events from sqlite:///") and out.stderr == ""

    target = PostgresStore(pg_url)
    await target.open()
    try:
        assert [(u.id, u.email, u.is_admin, u.password_hash) for u in await target.users()] == [
            (1, "alice@example.com", True, "hash-a"), (2, "bob@example.com", False, "hash-b")]
        assert (await target.user_by_api_token("tokhash")).email == "alice@example.com"
        assert await target.policy(1) == UserPolicy(mode="always", clicks=False, sticky_choice=Choice(True, None))
        assert await target.privacy_list("dnt") == ["@secret.example"]
        assert await target.privacy_list("consent") == ["carol@example.org"]
        assert await target.message_reports(None) == before
        assert await target.message_report(before[-1].id, None) == before_detail
        assert [n.text for n in await target.notifications(1)] == [
            "bob@example.org clicked https://example.com/a in \u201csubject SENT\u201d",
            "bob@example.org opened \u201csubject SENT\u201d"]
        [waiting] = await target.claim("w", T0 + 100, 10, 60)
        assert waiting.queue_id == "WAITING" and waiting.body.endswith(b"body WAITING")
        assert (await target.add_user("dan@example.com", "h")).id == 3  # new ids continue after the copied
        [hook] = await target.webhooks(1)
        assert (hook.secret, hook.failing_since) == ("whsec", T0 + 61)
        assert sorted((d.status, d.attempts, len(d.tries)) for d in await target.deliveries(hook.id)) == [
            ("queued", 0, 0), ("queued", 1, 1)]  # made at the same time: in no particular order
    finally:
        await target.close()

    again = migrate("--from", f"sqlite:///{tmp_path}/old.db", "--to", pg_url, "--json")
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert again.stderr.strip() == "trackrelay: --to: the target store is not empty (it has users or messages)"


async def test_json_summary(tmp_path, pg_url):
    source = await filled_sqlite(tmp_path / "old.db")
    await source.close()
    out = migrate("--from", f"sqlite:///{tmp_path}/old.db", "--to", pg_url, "--json")
    assert out.returncode == 0, out.stderr
    copied = json.loads(out.stdout)["copied"]
    assert (copied["users"], copied["messages"], copied["events"], copied["bodies"]) == (2, 2, 2, 1)


async def test_progress_on_a_terminal(tmp_path, pg_url):
    source = await filled_sqlite(tmp_path / "old.db")
    await source.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    leader, follower = pty.openpty()  # stderr on a terminal, stdout a pipe
    try:
        out = subprocess.run([TRACKRELAY, "migrate-store", "--from", f"sqlite:///{tmp_path}/old.db", "--to", pg_url],
                             env=env, stdout=subprocess.PIPE, stderr=follower, text=True, timeout=120)
        os.close(follower)
        shown = b""
        while chunk := _read(leader):
            shown += chunk
    finally:
        os.close(leader)
    assert out.returncode == 0 and out.stdout.startswith("copied 2 users,")
    assert b"\rcopying users: 2 rows" in shown and b"\rcopying events: 2 rows" in shown


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the terminal's other end is closed
        return b""
