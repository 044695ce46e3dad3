"""The JSON API over HTTP: tracked mail sent for real, hits on the hits server, then what
/api/v1 reports, to whom, and how it refuses bad requests."""
from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp

from conftest import add_user, both_engines, relay_to
from hits_helpers import (
    CHROME,
    LINKS,
    THUNDERBIRD,
    FakeClock,
    store_sql,
    deliver_tracked,
    events,
    hit,
    send,
    start_relay,
    tracked_mail,
    wait_until,
)
from relay.auth import new_api_token, token_hash
from test_smtp_relay import send as smtp_send
from test_tracking_e2e import TOKEN, html_mail

READER = "203.0.113.77"
MESSAGE_KEYS = {"id", "message_id", "subject", "sent_at", "delivered_at", "status", "tracked", "opens",
                "human_opens", "clicks", "human_clicks", "first_open_at", "last_open_at", "recipients"}
RECIPIENT_KEYS = {"address", "opens", "human_opens", "clicks", "human_clicks", "first_open_at", "last_open_at",
                  "status", "tracked", "shared"}
EVENT_KEYS = {"type", "at", "recipient", "url", "ip", "user_agent", "class", "implied"}


def when(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


async def token_for(app: Any, email: str = "alice@example.com") -> str:
    user = await app.store.user_by_email(email) or await add_user(app, email)
    token = new_api_token()
    await app.store.add_api_token(user.id, token_hash(token))
    return token


async def api(session: aiohttp.ClientSession, app: Any, path: str, token: str | None, *,
              method: str = "GET", body: Any = None, raw: bytes | None = None) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    async with session.request(method, f"http://127.0.0.1:{app.port('admin')}{path}", headers=headers,
                               data=data) as resp:
        text = await resp.text()
        assert resp.headers["Content-Type"].startswith("application/json"), (path, resp.status, text)
        return resp.status, json.loads(text), resp


async def test_a_cli_token_authenticates_and_anything_else_is_401(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    env["TRACKRELAY_STORE_URL"] = f"sqlite:///{tmp_path}/relay.db"
    proc = await asyncio.create_subprocess_exec(str(Path(sys.executable).with_name("trackrelay")), "token", "create",
                                                "alice@example.com", env=env, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    token = out.decode().strip()
    async with aiohttp.ClientSession() as s:
        status, body, _ = await api(s, app, "/api/v1/messages", token)
        assert status == 200 and body == {"messages": [], "next": None}
        for bad in (None, "trk_not-a-real-token", token + "x"):
            status, body, resp = await api(s, app, "/api/v1/messages", bad)
            assert status == 401 and body["error"]
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        async with s.get(f"http://127.0.0.1:{app.port('admin')}/api/v1/policy",
                         headers={"Authorization": f"Basic {token}"}) as resp:
            assert resp.status == 401 and "error" in await resp.json()


@both_engines
async def test_messages_report_per_recipient_counts_links_and_events(sink, start_app, tmp_path):
    clock = FakeClock(1_800_000_000.0)
    app = await start_relay(start_app, tmp_path, sink, clock=clock)
    token = await token_for(app)
    sent_at = clock()
    copies = await deliver_tracked(app, sink, ("bob@example.org", "carol@example.org"))
    await send(app.port("smtp"), tracked_mail("alice@example.com", ["dan@example.org"], subject="untracked",
                                              track="off"), "alice@example.com", ["dan@example.org"])
    await sink.wait_for(3)
    bob, carol = copies["bob@example.org"], copies["carol@example.org"]
    async with aiohttp.ClientSession() as s:
        clock.advance(2)
        await hit(s, app, carol.pixel, ua="Mozilla/5.0", ip=READER)  # Apple MPP at delivery
        clock.advance(58)
        await hit(s, app, bob.pixel, ua=THUNDERBIRD, ip=READER)
        clock.advance(60)
        await hit(s, app, bob.pixel, ua=THUNDERBIRD, ip=READER)
        clock.advance(5)
        await hit(s, app, bob.clicks[1], ua=CHROME, ip=READER)
        await events(app, tmp_path, 4)
        await wait_until(lambda: _sent_count(app, 2))

        status, body, _ = await api(s, app, "/api/v1/messages?tracked=1", token)
        assert status == 200 and len(body["messages"]) == 1
        [msg] = body["messages"]
        assert set(msg) == MESSAGE_KEYS
        assert msg["subject"] == "Quarterly numbers" and msg["status"] == "sent"
        assert msg["tracked"] == {"opens": True, "clicks": True}
        assert msg["sent_at"] == when(sent_at) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", msg["delivered_at"])
        assert (msg["opens"], msg["human_opens"], msg["clicks"], msg["human_clicks"]) == (3, 2, 1, 1)
        by_address = {r["address"]: r for r in msg["recipients"]}
        assert all(set(r) == RECIPIENT_KEYS for r in msg["recipients"])
        assert by_address["bob@example.org"] == {
            "address": "bob@example.org", "opens": 2, "human_opens": 2, "clicks": 1, "human_clicks": 1,
            "first_open_at": when(sent_at + 60), "last_open_at": when(sent_at + 120), "status": "sent",
            "tracked": True, "shared": False}
        assert by_address["carol@example.org"]["opens"] == 1 and by_address["carol@example.org"]["human_opens"] == 0

        status, body, _ = await api(s, app, "/api/v1/messages?tracked=0", token)
        assert [m["subject"] for m in body["messages"]] == ["untracked"]
        assert body["messages"][0]["tracked"] == {"opens": False, "clicks": False}
        assert body["messages"][0]["recipients"][0]["tracked"] is False
        status, body, _ = await api(s, app, "/api/v1/messages", token)
        assert [m["subject"] for m in body["messages"]] == ["untracked", "Quarterly numbers"]  # newest first
        for bad in ("?tracked=maybe", "?limit=0", "?limit=abc", "?offset=-1"):
            status, body, _ = await api(s, app, "/api/v1/messages" + bad, token)
            assert status == 400 and body["error"], bad

        status, detail, _ = await api(s, app, f"/api/v1/messages/{msg['id']}", token)
        assert status == 200 and {k: detail[k] for k in MESSAGE_KEYS} == msg
        assert [(x["url"], x["clicks"], x["human_clicks"]) for x in detail["links"]] == [
            (LINKS[0], 0, 0), (LINKS[1], 1, 1), (LINKS[2], 0, 0)]
        assert all(set(e) == EVENT_KEYS for e in detail["events"])
        assert [(e["type"], e["recipient"], e["class"], e["at"]) for e in detail["events"]] == [
            ("open", "carol@example.org", "prefetch", when(sent_at + 2)),
            ("open", "bob@example.org", "human", when(sent_at + 60)),
            ("open", "bob@example.org", "human", when(sent_at + 120)),
            ("click", "bob@example.org", "human", when(sent_at + 125))]
        click = detail["events"][-1]
        assert click["url"] == LINKS[1] and click["ip"] == "203.0.113.0" and click["user_agent"] == CHROME
        assert detail["events"][0]["url"] is None


@both_engines
async def test_a_click_implies_an_open_which_is_counted_and_marked(sink, start_app, tmp_path):
    clock = FakeClock()
    app = await start_relay(start_app, tmp_path, sink, clock=clock)
    token = await token_for(app)
    copy = (await deliver_tracked(app, sink))["bob@example.org"]
    async with aiohttp.ClientSession() as s:
        clock.advance(60)
        await hit(s, app, copy.clicks[0], ua=CHROME, ip=READER)  # images blocked: no pixel first
        await events(app, tmp_path, 2)
        _, detail, _ = await api(s, app, "/api/v1/messages/1", token)
        assert (detail["opens"], detail["human_opens"], detail["clicks"]) == (1, 1, 1)
        assert [(e["type"], e["implied"], e["class"]) for e in detail["events"]] == [
            ("open", True, "human"), ("click", False, "human")]
        clock.advance(60)
        await hit(s, app, copy.pixel, ua=THUNDERBIRD, ip=READER)  # images shown later: a real open
        await events(app, tmp_path, 3)
        _, detail, _ = await api(s, app, "/api/v1/messages/1", token)
        assert (detail["opens"], detail["human_opens"]) == (2, 2)
        assert detail["recipients"][0]["first_open_at"] == detail["events"][0]["at"]


@both_engines
async def test_a_user_sees_only_their_own_mail(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink)
    alice = await token_for(app)
    mallory = await token_for(app, "mallory@example.com")
    root = await token_for(app, "root@example.com")
    await app.store.set_password("root@example.com", "x")
    await add_admin_flag(app, "root@example.com")
    await deliver_tracked(app, sink)
    async with aiohttp.ClientSession() as s:
        assert (await api(s, app, "/api/v1/messages", alice))[1]["messages"][0]["id"] == 1
        for token in (mallory, root):  # admins too, unless admin.admins_see_all
            status, body, _ = await api(s, app, "/api/v1/messages", token)
            assert status == 200 and body == {"messages": [], "next": None}
            status, body, _ = await api(s, app, "/api/v1/messages/1", token)
            assert status == 404 and body == {"error": "not found"}
        for path in ("/api/v1/messages/2", "/api/v1/messages/abc", "/api/v1/messages/-1",
                     "/api/v1/messages/99999999999999999999999"):
            status, body, _ = await api(s, app, path, alice)
            assert status == 404 and body["error"], path


async def test_admins_see_all_only_when_configured(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink, admin_admins_see_all="true")
    root = await token_for(app, "root@example.com")
    mallory = await token_for(app, "mallory@example.com")
    await add_admin_flag(app, "root@example.com")
    await deliver_tracked(app, sink)
    async with aiohttp.ClientSession() as s:
        assert (await api(s, app, "/api/v1/messages/1", root))[0] == 200
        assert (await api(s, app, "/api/v1/messages/1", mallory))[0] == 404


async def add_admin_flag(app: Any, email: str) -> None:
    assert "'" not in email
    await store_sql(app, f"UPDATE users SET is_admin = TRUE WHERE email = '{email}'")


async def _sent_count(app: Any, count: int) -> bool:
    return (await store_sql(app, "SELECT COUNT(*) FROM messages WHERE status = 'sent'"))[0][0] == count


@both_engines
async def test_notifications_for_the_first_human_open_and_each_human_click(sink, start_app, tmp_path):
    clock = FakeClock()
    app = await start_relay(start_app, tmp_path, sink, clock=clock)
    token = await token_for(app)
    other = await token_for(app, "mallory@example.com")
    copy = (await deliver_tracked(app, sink))["bob@example.org"]
    async with aiohttp.ClientSession() as s:
        clock.advance(2)
        await hit(s, app, copy.pixel, ua="Mozilla/5.0", ip=READER)  # a machine: no notification
        clock.advance(60)
        await hit(s, app, copy.pixel, ua=THUNDERBIRD, ip=READER)  # first human open
        clock.advance(60)
        await hit(s, app, copy.pixel, ua=THUNDERBIRD, ip=READER)  # not the first
        clock.advance(60)
        await hit(s, app, copy.clicks[2], ua=CHROME, ip=READER)
        await events(app, tmp_path, 4)
        status, body, _ = await api(s, app, "/api/v1/notifications", token)
        assert status == 200
        got = [(n["type"], n["recipient"], n["url"], n["message"]["id"]) for n in body["notifications"]]
        assert got == [("click", "bob@example.org", LINKS[2], 1), ("open", "bob@example.org", None, 1)]
        assert body["notifications"][0]["at"] == when(clock())
        assert body["notifications"][1]["message"]["subject"] == "Quarterly numbers"
        assert "bob@example.org" in body["notifications"][0]["text"] and body["notifications"][0]["read"] is False
        assert (await api(s, app, "/api/v1/notifications", other))[1] == {"notifications": []}

        status, _, _ = await api(s, app, "/api/v1/policy", token, method="PUT", body={"notify": False})
        assert status == 200
        clock.advance(60)
        await hit(s, app, copy.clicks[0], ua=CHROME, ip=READER)
        await events(app, tmp_path, 5)
        assert len((await api(s, app, "/api/v1/notifications", token))[1]["notifications"]) == 2


async def test_policy_can_be_read_changed_and_refuses_bad_input(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink)
    token = await token_for(app)
    async with aiohttp.ClientSession() as s:
        status, body, _ = await api(s, app, "/api/v1/policy", token)
        assert status == 200 and body == {"mode": "opt-in", "opens": True, "clicks": True, "notify": True,
                                          "sticky": True, "sticky_choice": None}
        status, body, _ = await api(s, app, "/api/v1/policy", token, method="PUT",
                                    body={"mode": "always", "clicks": False, "sticky": False})
        assert status == 200 and (body["mode"], body["clicks"], body["sticky"]) == ("always", False, False)
        assert (await api(s, app, "/api/v1/policy", token))[1] == body
        bad = [b"{not json", b"[]", b'"always"', json.dumps({"mode": "sometimes"}).encode(),
               json.dumps({"colour": "red"}).encode(), json.dumps({"opens": "maybe"}).encode(),
               json.dumps({"mode": 3}).encode(), b"\xff\xfe"]
        for raw in bad:
            status, err, _ = await api(s, app, "/api/v1/policy", token, method="PUT", raw=raw)
            assert status == 400 and isinstance(err["error"], str) and err["error"], raw
        assert (await api(s, app, "/api/v1/policy", token))[1] == body  # nothing half-applied
    # the running relay applies it at once: mail without any control is now tracked (opens only)
    await send(app.port("smtp"), tracked_mail("alice@example.com", ["bob@example.org"], track=""),
               "alice@example.com", ["bob@example.org"])
    await sink.wait_for(1)
    async with aiohttp.ClientSession() as s:
        [msg] = (await api(s, app, "/api/v1/messages", token))[1]["messages"]
    assert msg["tracked"] == {"opens": True, "clicks": False}


async def test_hostile_user_agents_are_stored_verbatim_and_returned_json_escaped(sink, start_app, tmp_path):
    clock = FakeClock()
    app = await start_relay(start_app, tmp_path, sink, clock=clock)
    token = await token_for(app)
    copy = (await deliver_tracked(app, sink))["bob@example.org"]
    clock.advance(60)
    hostile = ['<script>alert("pwned")</script><img src=x onerror=alert(1)>',
               "'; DROP TABLE events; -- \\ \" ' ` ${7*7} {{7*7}} %s %n",
               "Mozilla/5.0 (X11) \u00fc\u00f1\u00ee\u00e7\u00f8d\u00e9 \u2028\u2029 &amp; &lt;",
               "A" * 4000]
    port = app.port("hits")
    path = copy.pixel.split("/", 3)[3]
    for ua in hostile + [None]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        raw_ua = b"bad \xff\xfe bytes" if ua is None else ua.encode("utf-8")
        writer.write(b"GET /" + path.encode() + b" HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: " + READER.encode()
                     + b"\r\nUser-Agent: " + raw_ua + b"\r\nConnection: close\r\n\r\n")
        await writer.drain()
        assert (await reader.read()).startswith(b"HTTP/1.1 200")
        writer.close()
        await writer.wait_closed()
    stored = [r[3] for r in await events(app, tmp_path, 5)]
    assert set(stored) == set(hostile) | {"bad \u00ff\u00fe bytes"}  # invalid UTF-8 kept byte for byte
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{app.port('admin')}/api/v1/messages/1",
                         headers={"Authorization": f"Bearer {token}"}) as resp:
            raw = await resp.read()
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert b"<" not in raw and b">" not in raw and "\u2028".encode() not in raw
    assert {e["user_agent"] for e in json.loads(raw)["events"]} == set(stored)


async def test_metrics_in_prometheus_format_and_healthz(sink, start_app, tmp_path):
    clock = FakeClock()
    app = await start_relay(start_app, tmp_path, sink, clock=clock)
    copy = (await deliver_tracked(app, sink))["bob@example.org"]
    clock.advance(60)
    async with aiohttp.ClientSession() as s:
        await hit(s, app, copy.pixel, ua=THUNDERBIRD, ip=READER)
        await hit(s, app, copy.pixel, ua="Mozilla/5.0", ip=READER)
        await hit(s, app, copy.clicks[0], ua="curl/8.5.0", ip=READER)
        await events(app, tmp_path, 4)
        base = f"http://127.0.0.1:{app.port('admin')}"
        async with s.get(base + "/healthz") as resp:
            assert resp.status == 200 and await resp.text() == "ok\n"
        async with s.get(base + "/metrics") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await resp.text()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# (HELP|TYPE) [a-z_]+ .+", line), line
            continue
        m = re.fullmatch(r'([a-z_]+(?:\{[a-z_]+="[^"]*"(?:,[a-z_]+="[^"]*")*\})?) (-?[0-9.e+]+)', line)
        assert m, line
        samples[m.group(1)] = float(m.group(2))
    assert samples['trackrelay_hits_total{kind="open",class="human"}'] == 1
    assert samples['trackrelay_hits_total{kind="open",class="prefetch"}'] == 1
    assert samples['trackrelay_hits_total{kind="click",class="scanner"}'] == 1
    assert samples["trackrelay_hits_recorded_total"] == 3
    assert samples["trackrelay_hit_queue_depth"] == 0
    assert samples["trackrelay_mail_accepted_total"] == 1
    assert samples['trackrelay_deliveries_total{result="delivered"}'] == 1
    assert samples['trackrelay_deliveries_total{result="bounced"}'] == 0
    assert samples['trackrelay_messages{status="queued"}'] == 0
    assert "# TYPE trackrelay_hits_dropped_total counter" in text


async def test_unknown_api_paths_and_methods_answer_json(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink)
    token = await token_for(app)
    async with aiohttp.ClientSession() as s:
        status, body, _ = await api(s, app, "/api/v1/nothing-here", token)
        assert status == 404 and body == {"error": "not found"}
        status, body, resp = await api(s, app, "/api/v1/messages", token, method="DELETE")
        assert status == 405 and body["error"] and "GET" in resp.headers["Allow"]


async def test_privacy_lists_for_admins_apply_to_the_next_mail(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path)
    admin = await add_user(app, "root@example.com", admin=True)
    user = await app.store.user_by_email("alice@example.com")
    tokens = {}
    for who in (admin, user):
        tokens[who.id] = new_api_token()
        await app.store.add_api_token(who.id, token_hash(tokens[who.id]))
    base = f"http://127.0.0.1:{app.port('admin')}/api/v1/privacy"

    def auth(who) -> dict:
        return {"Authorization": f"Bearer {tokens[who.id]}"}

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/dnt", headers=auth(user)) as resp:
            assert resp.status == 403
        async with http.post(f"{base}/dnt", json={"entry": "Bob@Example.org"}, headers=auth(admin)) as resp:
            assert resp.status == 201 and (await resp.json()) == {"entry": "bob@example.org", "added": True}
        async with http.post(f"{base}/dnt", json={"entry": "not an address"}, headers=auth(admin)) as resp:
            assert resp.status == 400 and "not an address" in (await resp.json())["error"]
        async with http.post(f"{base}/consent", data=b"{", headers=auth(admin)) as resp:
            assert resp.status == 400
        async with http.get(f"{base}/dnt", headers=auth(admin)) as resp:
            listed = await resp.json()
            assert listed["entries"] == ["bob@example.org"]
            assert [(r["source"], r["recorded_by"]) for r in listed["records"]] == [("api", "root@example.com")]
        # the relay reads the list per mail: bob's copy goes out untracked, carol's tracked
        await smtp_send(app.port("smtp"), html_mail(extra_headers="X-Track: on\r\n"),
                        rcpts=["bob@example.org", "carol@example.net"])
        got = {m.rcpt_tos[0]: m.data for m in await sink.wait_for(2)}
        assert not TOKEN.search(got["bob@example.org"]) and TOKEN.search(got["carol@example.net"])
        async with http.delete(f"{base}/dnt/bob@example.org", headers=auth(admin)) as resp:
            assert resp.status == 204
        async with http.delete(f"{base}/dnt/bob@example.org", headers=auth(admin)) as resp:
            assert resp.status == 404
        async with http.get(f"{base}/other", headers=auth(admin)) as resp:
            assert resp.status == 404


@both_engines
async def test_messages_page_by_cursor_and_search_subjects_and_recipients(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink)
    token = await token_for(app)
    for n, rcpt in enumerate(("bob@example.org", "carol@example.org", "bob@example.net")):
        await send(app.port("smtp"), tracked_mail("alice@example.com", [rcpt], subject=f"Offer {n}"),
                   "alice@example.com", [rcpt])
    await sink.wait_for(3)
    async with aiohttp.ClientSession() as s:
        seen, path = [], "/api/v1/messages?limit=2"
        while path:
            status, body, _ = await api(s, app, path, token)
            assert status == 200 and len(body["messages"]) <= 2
            seen += [m["subject"] for m in body["messages"]]
            path = f"/api/v1/messages?limit=2&before={body['next']}" if body["next"] else None
        assert seen == ["Offer 2", "Offer 1", "Offer 0"]
        _, body, _ = await api(s, app, "/api/v1/messages?q=BOB%40", token)
        assert [m["subject"] for m in body["messages"]] == ["Offer 2", "Offer 0"] and body["next"] is None
        _, body, _ = await api(s, app, "/api/v1/messages?q=offer%201", token)
        assert [m["subject"] for m in body["messages"]] == ["Offer 1"]
        for bad in ("?before=yesterday", "?before=1.5_x", "?limit=501"):
            status, body, _ = await api(s, app, "/api/v1/messages" + bad, token)
            assert status == 400 and body["error"], bad
