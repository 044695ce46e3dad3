"""Webhooks end to end: a real relay, tracked mail, real hits, a real aiohttp receiver on
loopback (notify.allow_private_targets = true unless a test says otherwise)."""
from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass, field
from typing import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from conftest import both_engines
from hits_helpers import (
    CHROME, READER_IP, FakeClock, copies_in, deliver_tracked, hit, send, start_relay, tracked_mail, wait_until,
)
from relay.notify_payloads import verify
from relay.records import WebhookSpec

SECRET = "whsec-test"
# a click right after delivery is a scanner's unless the window is this short
FAST = {"notify_allow_private_targets": "true", "notify_retry_intervals": "100ms", "tracking_machine_window": "1ms"}


@dataclass
class Receiver:
    """Records every POST; `statuses` scripts the answers (then 200)."""

    port: int = 0
    statuses: list[int] = field(default_factory=list)
    got: list[tuple[dict, bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        self.arrived.set()
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    async def wait_for(self, count: int, timeout: float = 15.0) -> list[tuple[dict, bytes]]:
        async def enough() -> None:
            while len(self.got) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(enough(), timeout)
        return self.got

    def events(self) -> list[dict]:
        return [json.loads(body) for _, body in self.got]


async def serve(receiver: Receiver, port: int = 0) -> web.AppRunner:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    receiver.port = site._server.sockets[0].getsockname()[1]
    return runner


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    runner = await serve(r)
    yield r
    await runner.cleanup()


async def add_hook(app, url: str, **spec) -> int:
    user = await app.store.user_by_email("alice@example.com")
    hook = await app.store.add_webhook(user.id, WebhookSpec(url, **spec), SECRET, app.clock())
    return hook.id


def reader(**kw):
    return {"ip": READER_IP, "ua": CHROME, **kw}


@both_engines
async def test_the_first_human_open_reaches_a_json_receiver_signed_and_machines_notify_nobody(
        sink, start_app, tmp_path, receiver):
    app = await start_relay(start_app, tmp_path, sink, **FAST)
    await add_hook(app, receiver.url)
    [copy] = (await deliver_tracked(app, sink)).values()
    async with aiohttp.ClientSession() as http:
        await hit(http, app, copy.pixel, ip="17.58.0.1", ua="Mozilla/5.0")  # Apple MPP prefetch
        await hit(http, app, copy.pixel, ip=READER_IP, ua="Mozilla/5.0 (compatible; bingbot/2.0)")  # a bot
        await hit(http, app, copy.pixel)  # from 127.0.0.1, where the mail came from: self
        await hit(http, app, copy.pixel, ip="66.249.84.1",
                  ua="Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)")
        await hit(http, app, copy.pixel, **reader())
        [(headers, body)] = await receiver.wait_for(1)
        await hit(http, app, copy.pixel, **reader())  # first_only: a second human open says nothing
        await hit(http, app, copy.clicks[1], **reader())
        await receiver.wait_for(2)
    event = json.loads(body)
    assert verify(SECRET, headers["X-Trackrelay-Signature"], body, int(time.time()))
    assert headers["X-Trackrelay-Event-Id"] == event["id"]
    assert (event["type"], event["recipient"], event["class"]) == ("message.opened", "bob@example.org", "human")
    assert event["message"]["subject"] == "Quarterly numbers"
    assert [e["type"] for e in receiver.events()] == ["message.opened", "link.clicked"]
    assert receiver.events()[1]["url"] == "https://example.org/second"
    [report] = await app.store.message_reports(None)
    detail = await app.store.message_report(report.id, None)
    assert {e.cls for e in detail.events} == {"prefetch", "scanner", "self", "proxy", "human"}


async def test_500_then_200_is_delivered_again_with_the_same_id_then_silent(sink, start_app, tmp_path, receiver):
    app = await start_relay(start_app, tmp_path, sink, **FAST)
    await add_hook(app, receiver.url)
    receiver.statuses = [500]
    [copy] = (await deliver_tracked(app, sink)).values()
    async with aiohttp.ClientSession() as http:
        await hit(http, app, copy.pixel, **reader())
        first, second = await receiver.wait_for(2)
        await hit(http, app, copy.clicks[0], **reader())
        await receiver.wait_for(3)
    assert first[0]["X-Trackrelay-Event-Id"] == second[0]["X-Trackrelay-Event-Id"]
    assert [e["type"] for e in receiver.events()] == ["message.opened", "message.opened", "link.clicked"]
    assert receiver.events()[0]["id"] == receiver.events()[1]["id"]

    async def metrics() -> str:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{app.port('admin')}/metrics") as resp:
                return await resp.text()

    await wait_until(lambda: _metric(metrics, 'trackrelay_notifications_total{result="sent"} 2'))
    text = await metrics()
    assert 'trackrelay_notifications_total{result="retried"} 1' in text
    assert 'trackrelay_notification_deliveries{status="sent"} 2' in text
    assert "trackrelay_notification_latency_seconds_count 3" in text


async def _metric(fetch, line: str) -> bool:
    return line in await fetch()


@both_engines
async def test_a_receiver_down_across_a_restart_gets_the_event_after_it_from_notify_alone(sink, start_app, tmp_path):
    with socket.socket() as s:  # a port nobody listens on, for now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = f"http://127.0.0.1:{port}/hook"
    app = await start_relay(start_app, tmp_path, sink, **FAST)
    hook = await add_hook(app, down)
    [copy] = (await deliver_tracked(app, sink)).values()
    async with aiohttp.ClientSession() as http:
        await hit(http, app, copy.pixel, **reader())

    async def tried() -> bool:
        return any(d.attempts for d in await app.store.deliveries(hook))

    await wait_until(tried)
    await app.stop()
    later = Receiver()
    runner = await serve(later, port)
    try:
        await start_app(app.cfg, only="notify")  # `serve --only notify`: the outbox alone is enough
        [(headers, body)] = await later.wait_for(1)
        assert json.loads(body)["type"] == "message.opened"
    finally:
        await runner.cleanup()


async def test_410_disables_the_webhook_and_tells_its_owner(sink, start_app, tmp_path, receiver):
    app = await start_relay(start_app, tmp_path, sink, **FAST)
    hook = await add_hook(app, receiver.url)
    receiver.statuses = [410]
    [copy] = (await deliver_tracked(app, sink)).values()
    async with aiohttp.ClientSession() as http:
        await hit(http, app, copy.pixel, **reader())
    await receiver.wait_for(1)

    async def disabled() -> bool:
        found = await app.store.webhook(hook, None)
        return not found.spec.enabled

    await wait_until(disabled)
    user = await app.store.user_by_email("alice@example.com")
    assert any(n.type == "webhook" and "disabled" in n.text for n in await app.store.notifications(user.id))


async def test_a_webhook_to_loopback_is_refused_by_default(sink, start_app, tmp_path, receiver):
    app = await start_relay(start_app, tmp_path, sink, notify_retry_intervals="1h", tracking_machine_window="1ms")
    hook = await add_hook(app, receiver.url)
    [copy] = (await deliver_tracked(app, sink)).values()
    async with aiohttp.ClientSession() as http:
        await hit(http, app, copy.pixel, **reader())

    async def attempted() -> list:
        return [a for d in await app.store.deliveries(hook) for a in d.tries]

    await wait_until(attempted)
    [attempt] = await attempted()
    assert attempt.status_code is None and "loopback" in attempt.error
    assert receiver.got == []


async def test_a_digest_sends_one_summary_per_period(sink, start_app, tmp_path, receiver):
    clock = FakeClock(start=900 * (int(time.time()) // 900) + 1)  # the start of a period
    app = await start_relay(start_app, tmp_path, sink, clock=clock, **FAST)
    await add_hook(app, receiver.url, digest=900.0)
    copies = await deliver_tracked(app, sink, rcpts=("bob@example.org", "carol@example.org"))
    async with aiohttp.ClientSession() as http:
        for copy in copies.values():
            await hit(http, app, copy.pixel, **reader())

    async def queued() -> bool:
        return (await app.store.delivery_counts()).get("queued", 0) == 2

    await wait_until(queued)
    assert receiver.got == []  # due at the end of the period, which the clock has not reached
    clock.advance(900)
    [(headers, body)] = await receiver.wait_for(1)
    digest = json.loads(body)
    assert digest["type"] == "digest"
    assert sorted(e["recipient"] for e in digest["events"]) == ["bob@example.org", "carol@example.org"]
    assert verify(SECRET, headers["X-Trackrelay-Signature"], body, int(clock()))


@both_engines
async def test_unopened_mail_gets_one_follow_up_never_for_bounced_or_do_not_track(sink, start_app, tmp_path, receiver):
    clock = FakeClock()
    app = await start_relay(start_app, tmp_path, sink, clock=clock, **FAST)
    await add_hook(app, receiver.url, events=("open", "click", "unopened"), unopened_after=86400.0)
    sink.rcpt_replies["erin@example.org"] = "550 5.1.1 no such user"  # bounced: never delivered
    rcpts = ("bob@example.org", "carol@example.org", "dave@example.org", "erin@example.org")
    await app.store.privacy_add("dnt", "dave@example.org")  # dave is not tracked
    before = len(sink.messages)
    await send(app.port("smtp"), tracked_mail("alice@example.com", rcpts), "alice@example.com", rcpts)
    got = await sink.wait_for(before + 3)  # bob's and carol's copies, dave's original
    copies = {m.rcpt_tos[0]: copies_in(m.data) for m in got[before:] if b"/o/" in m.data}
    assert sorted(copies) == ["bob@example.org", "carol@example.org"]
    async with aiohttp.ClientSession() as http:
        await hit(http, app, copies["carol@example.org"].pixel, **reader())
        await receiver.wait_for(1)
        await app.store.privacy_add("dnt", "carol@example.org")  # opened anyway: no follow-up either way
        clock.advance(86400 + 1)
        await receiver.wait_for(2)
        clock.advance(3600)  # the next look finds nothing new
        await hit(http, app, copies["bob@example.org"].clicks[0], **reader())  # implies his first open
        await receiver.wait_for(4)
    seen = [(e["type"], e["recipient"]) for e in receiver.events()]
    assert seen[:2] == [("message.opened", "carol@example.org"), ("message.unopened", "bob@example.org")]
    assert sorted(seen[2:]) == [("link.clicked", "bob@example.org"), ("message.opened", "bob@example.org")]
    user = await app.store.user_by_email("alice@example.com")
    assert [n.recipient for n in await app.store.notifications(user.id) if n.type == "unopened"] == ["bob@example.org"]


# the field each tool's incoming webhook needs, and where the recipient's address shows
CHAT_SHAPES = {
    "slack": lambda p: p["blocks"] and p["text"],
    "mattermost": lambda p: p["text"],
    "discord": lambda p: p["embeds"] and p["allowed_mentions"] == {"parse": []},
    "teams": lambda p: p["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive",
    "googlechat": lambda p: p["cardsV2"],
}


@pytest.mark.parametrize("kind", sorted(CHAT_SHAPES))
async def test_a_first_human_open_reaches_each_chat_tool_in_its_own_format(sink, start_app, tmp_path, receiver,
                                                                           kind):
    app = await start_relay(start_app, tmp_path, sink, **FAST)
    await add_hook(app, receiver.url, kind=kind)
    [copy] = (await deliver_tracked(app, sink)).values()
    async with aiohttp.ClientSession() as http:
        await hit(http, app, copy.pixel, ip="17.58.0.1", ua="Mozilla/5.0")  # Apple's prefetch: nobody told
        await hit(http, app, copy.pixel, **reader())
        [(headers, body)] = await receiver.wait_for(1)
    payload = json.loads(body)
    assert headers["Content-Type"].startswith("application/json")
    assert "X-Trackrelay-Signature" not in headers  # only json webhooks are signed
    assert CHAT_SHAPES[kind](payload)
    text = json.dumps(payload, ensure_ascii=False)
    assert "Quarterly numbers" in text and "bob@" in text  # which mail, who (escaped for the tool)
    assert "/messages/" in text  # a link to it in the panel
    assert len(receiver.got) == 1
