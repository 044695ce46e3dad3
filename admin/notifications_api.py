"""/api/v1/notifications: the user's in-app notifications (the bell), newest first; marking
them read; and a live stream of new ones as Server-Sent Events.

The stream takes a bearer token or the panel's session cookie (the bell's script has only the
cookie). Each event carries the notification's id, so a browser that reconnects sends
`Last-Event-ID` and gets what it missed. New notifications are found by a cheap indexed look
per connection each second, so notifications recorded by another process (a `--only hits`
node) arrive as well as this process's own.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

from aiohttp import web

from admin.api import MAX_LIMIT, api_error, int_param, json_object, json_response, notification_json, whole_number
from admin.keys import STORE, request_user

ROUTE = "/notifications"
POLL = 1.0  # seconds between looks for new notifications
HEARTBEAT = 15.0  # a comment line this often keeps proxies from closing an idle stream
MAX_STREAMS_PER_USER = 10
STREAMS = web.AppKey("notification_streams", Counter)
STOPPING = web.AppKey("notification_streams_stopping", asyncio.Event)


def setup(app: web.Application) -> None:
    """Stream bookkeeping on the admin app: open streams per user, and their end at shutdown
    (a stream never ends by itself; the server stops at once instead of waiting them out)."""
    app[STREAMS] = Counter()
    app[STOPPING] = asyncio.Event()

    async def end_streams(app: web.Application) -> None:
        app[STOPPING].set()

    app.on_shutdown.append(end_streams)


def add_routes(api: web.Application) -> None:
    api.router.add_get(ROUTE, list_notifications)
    api.router.add_post(ROUTE + "/read", mark_read)
    api.router.add_get(ROUTE + "/stream", stream)


async def list_notifications(request: web.Request) -> web.Response:
    limit = int_param(request, "limit", 100, 1, MAX_LIMIT)
    unread = request.query.get("unread", "0")
    if unread not in ("0", "1", "true", "false"):
        return api_error(400, "unread: expected 1 or 0")
    items = await request.config_dict[STORE].notifications(request_user(request).id, limit,
                                                           unread_only=unread in ("1", "true"))
    return json_response({"notifications": [notification_json(n) for n in items]})


async def mark_read(request: web.Request) -> web.Response:
    body = await json_object(request, '{"ids": [1, 2]} or {"all": true}')
    ids: list[int] | None
    if body.get("all") is True and set(body) == {"all"}:
        ids = None
    elif (set(body) == {"ids"} and isinstance(body["ids"], list)
          and len(body["ids"]) <= MAX_LIMIT
          and all(isinstance(i, int) and not isinstance(i, bool) for i in body["ids"])):
        ids = body["ids"]
    else:
        return api_error(400, 'expected {"ids": [id, ...]} or {"all": true}')
    store, user = request.config_dict[STORE], request_user(request)
    marked = await store.mark_notifications_read(user.id, ids)  # others' ids mark nothing
    return json_response({"marked": marked, "unread": await store.unread_notifications(user.id)})


def sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def stream(request: web.Request) -> web.StreamResponse:
    store, user = request.config_dict[STORE], request_user(request)
    streams = request.config_dict[STREAMS]
    if streams[user.id] >= MAX_STREAMS_PER_USER:
        return api_error(429, f"at most {MAX_STREAMS_PER_USER} notification streams per user", {"Retry-After": "10"})
    resume = whole_number(request.headers.get("Last-Event-ID", ""))  # else: only what comes from now on
    after = resume if resume is not None else await store.newest_notification(user.id)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    streams[user.id] += 1
    try:
        await response.prepare(request)
        # first the count, so a bell that (re)connects is right at once
        await response.write(sse("unread", {"unread": await store.unread_notifications(user.id)}))
        quiet_since = time.monotonic()
        stopping = request.config_dict[STOPPING]
        while not stopping.is_set():
            fresh = await store.notifications(user.id, 100, after_id=after)
            if fresh:
                unread = await store.unread_notifications(user.id)
                for n in fresh:
                    await response.write(sse("notification", {**notification_json(n), "unread": unread}, n.id))
                after = fresh[-1].id
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= HEARTBEAT:
                await response.write(b": still here\n\n")
                quiet_since = time.monotonic()
            try:
                await asyncio.wait_for(stopping.wait(), POLL)
            except asyncio.TimeoutError:
                pass
        return response
    except ConnectionResetError:  # the browser went away (a tab closed, a page left): nothing to answer
        return response
    finally:
        streams[user.id] -= 1
