"""The bell's API: unread notifications, marking them read, and the live stream (Server-Sent Events)."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from hits_helpers import THUNDERBIRD, deliver_tracked, events, hit, start_relay
from panel_helpers import client, login
from test_api import READER, api, token_for


async def next_event(resp: aiohttp.ClientResponse, timeout: float = 10.0) -> tuple[str, str | None, Any]:
    """(event, id, data) of the next Server-Sent Event; comment lines (heartbeats) are skipped."""
    name, event_id, data = "message", None, None
    while True:
        line = (await asyncio.wait_for(resp.content.readline(), timeout)).decode().rstrip("\n")
        if line.startswith(":"):
            continue
        if not line:
            if data is not None:
                return name, event_id, data
            continue
        field, _, value = line.partition(": ")
        if field == "event":
            name = value
        elif field == "id":
            event_id = value
        elif field == "data":
            data = json.loads(value)


async def test_unread_and_mark_read_are_per_user(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink)
    token, other = await token_for(app), await token_for(app, "eve@example.com")
    copies = await deliver_tracked(app, sink, rcpts=("bob@example.org", "carol@example.net", "dave@example.net"))
    async with aiohttp.ClientSession() as s:
        for copy in copies.values():  # a first human open of each copy: one notification each
            await hit(s, app, copy.pixel, ua=THUNDERBIRD, ip=READER)
        await events(app, tmp_path, len(copies))
        _, body, _ = await api(s, app, "/api/v1/notifications?unread=1", token)
        ids = [n["id"] for n in body["notifications"]]
        assert len(ids) == len(copies) >= 2 and not any(n["read"] for n in body["notifications"])
        status, body, _ = await api(s, app, "/api/v1/notifications/read", other, method="POST", body={"ids": ids})
        assert status == 200 and body == {"marked": 0, "unread": 0}  # eve cannot touch alice's
        status, body, _ = await api(s, app, "/api/v1/notifications/read", token, method="POST",
                                    body={"ids": ids[:1]})
        assert status == 200 and body == {"marked": 1, "unread": len(ids) - 1}
        _, body, _ = await api(s, app, "/api/v1/notifications?unread=1", token)
        assert [n["id"] for n in body["notifications"]] == ids[1:]
        status, body, _ = await api(s, app, "/api/v1/notifications/read", token, method="POST", body={"all": True})
        assert body == {"marked": len(ids) - 1, "unread": 0}
        _, body, _ = await api(s, app, "/api/v1/notifications", token)
        assert len(body["notifications"]) == len(ids) and all(n["read"] for n in body["notifications"])
        for bad in ({}, {"ids": "1"}, {"ids": [True]}, {"all": False}, {"all": True, "ids": []}, [1]):
            status, body, _ = await api(s, app, "/api/v1/notifications/read", token, method="POST", body=bad)
            assert status == 400 and body["error"]
        status, _, _ = await api(s, app, "/api/v1/notifications?unread=maybe", token)
        assert status == 400


async def test_the_stream_brings_a_new_notification_and_resumes_from_last_event_id(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink)
    token = await token_for(app)
    copy = next(iter((await deliver_tracked(app, sink)).values()))
    stream_url = f"http://127.0.0.1:{app.port('admin')}/api/v1/notifications/stream"
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as s:
        async with s.get(stream_url) as anonymous:
            assert anonymous.status == 401
        async with s.get(stream_url, headers=auth) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
            assert await next_event(resp) == ("unread", None, {"unread": 0})
            await hit(s, app, copy.pixel, ua=THUNDERBIRD, ip=READER)  # a person opens it
            name, event_id, data = await next_event(resp)
            assert name == "notification" and data["type"] == "open" and data["unread"] == 1
            assert event_id == str(data["id"]) and data["recipient"] == copy.recipient
        # a reconnecting browser sends the last id it saw: it gets what came after it
        async with s.get(stream_url, headers={**auth, "Last-Event-ID": "0"}) as again:
            await next_event(again)  # the count
            assert (await next_event(again))[1] == event_id


async def test_the_panel_session_opens_the_stream_too(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink)
    await token_for(app)  # makes alice
    async with client() as s:
        await login(s, app)
        async with s.get(f"http://127.0.0.1:{app.port('admin')}/api/v1/notifications/stream") as resp:
            assert resp.status == 200
            assert await next_event(resp) == ("unread", None, {"unread": 0})
        async with s.get(f"http://127.0.0.1:{app.port('admin')}/api/v1/notifications") as plain:
            assert plain.status == 401  # the rest of the API still wants a token


async def test_a_stopping_server_ends_open_streams_at_once(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink)
    token = await token_for(app)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{app.port('admin')}/api/v1/notifications/stream",
                         headers={"Authorization": f"Bearer {token}"}) as resp:
            await next_event(resp)
            await app.stop()
            # ended by the server, cleanly (the last chunk sent), not cut off after its shutdown timeout
            assert await asyncio.wait_for(resp.content.read(), 5) == b""
