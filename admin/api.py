"""The JSON API (/api/v1, bearer tokens): messages with their opens and clicks,
notifications, the user's tracking policy. Per-user scoped: a user sees only their own
mail (admins everyone's only with admin.admins_see_all); another user's id is a 404.

Values a recipient controls (user agents, URLs, subjects) are returned exactly as stored;
JSON escaping (plus \\u003c/\\u003e/\\u0026, so a careless HTML embed stays inert) is all
the treatment they get here - display escaping is the panel's job.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from aiohttp import web

from admin.keys import SETTINGS, STORE, USER, mail_scope, request_user
from admin.sessions import PANEL_USER, STREAM_PATH
from relay.auth import token_hash
from relay.errors import StoreUnavailable
from relay.policy import UserPolicy, parse_policy_updates
from relay.records import EventReport, HitCounts, LinkReport, MessageReport, Notification, RecipientReport
from relay.store.queries import cursor_text, parse_cursor

PREFIX = "/api/"
OPENAPI_PATH = "/api/v1/openapi.json"  # the API's description: the one API path that needs no token
MAX_LIMIT = 1000
PAGE_DEFAULT, PAGE_MAX = 50, 500  # the message list's page size
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_api_app() -> web.Application:
    """Mounted at /api/v1/ by make_admin_app; the bearer check applies to these routes only."""
    api = web.Application(middlewares=[bearer_auth, no_nul])
    api.router.add_get("/messages", list_messages)
    api.router.add_get("/messages/{id}", get_message)
    api.router.add_get("/policy", get_policy)
    api.router.add_put("/policy", put_policy)
    return api


# responses and errors

def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    # valid JSON escapes that keep the document inert if someone pastes it into HTML
    text = (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    return web.Response(body=text.encode("utf-8"), status=status,
                        headers={"Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store",
                                 "X-Content-Type-Options": "nosniff", **(headers or {})})


def api_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": message}, status, headers)


async def json_object(request: web.Request, example: str) -> dict[str, Any]:
    """The request's body as a JSON object; else a 400 that shows `example` (the JSON error middleware answers it)."""
    try:
        body = json.loads(await request.text(), parse_constant=_not_json, parse_int=_int64, parse_float=_finite)
    except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
        raise web.HTTPBadRequest(reason=f"malformed JSON: {e}") from None
    except RecursionError:
        raise web.HTTPBadRequest(reason="malformed JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(reason=f"expected a JSON object such as {example}")
    if not _storable(body):
        raise web.HTTPBadRequest(reason="a string holds NUL or an unpaired surrogate (\\ud800-\\udfff)")
    return body


# Python's json module reads more than JSON, and more than a store holds: refused at the edge
# (else SQLite and PostgreSQL fail on them in their own ways, answered as 500 or 503)

def _not_json(word: str) -> Any:
    raise ValueError(f"{word} is not JSON")


def _int64(text: str) -> int:
    value = int(text)
    if not -2**63 <= value < 2**63:
        raise ValueError(f"{text[:30]} is beyond a 64-bit integer")
    return value


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:30]} is out of range")
    return value


def _storable(body: Any) -> bool:
    """No NUL (PostgreSQL refuses it in text) and no unpaired surrogate (no UTF-8 encodes one)."""
    pending = [body]
    while pending:  # a loop, not recursion: json reads nesting deeper than Python recurses
        value = pending.pop()
        if isinstance(value, str) and ("\x00" in value or _SURROGATE.search(value)):
            return False
        if isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, dict):
            pending.extend([*value, *value.values()])
    return True


_SURROGATE = re.compile("[\ud800-\udfff]")


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On the admin app: anything going wrong under /api/ answers JSON, never an HTML page."""
    if not request.path.startswith(PREFIX):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        message = {404: "not found", 405: "method not allowed"}.get(e.status, e.reason)
        return api_error(e.status, message, {k: v for k, v in e.headers.items() if k.lower() == "allow"})
    except StoreUnavailable:
        return api_error(503, "store unavailable, try again", {"Retry-After": "5"})


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == OPENAPI_PATH:
        return await handler(request)
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    if not token and request.path == STREAM_PATH and PANEL_USER in request:  # the bell, in a page
        request[USER] = request[PANEL_USER]
        return await handler(request)
    if scheme.lower() != "bearer" or not token:
        return api_error(401, "missing bearer token (Authorization: Bearer <token>)",
                         {"WWW-Authenticate": 'Bearer realm="trackrelay"'})
    digest = token_hash(token)
    user = await request.config_dict[STORE].user_by_api_token(digest)
    if user is None:
        return api_error(401, "invalid or revoked token",
                         {"WWW-Authenticate": 'Bearer realm="trackrelay", error="invalid_token"'})
    request[USER] = user
    await _note_use(request, digest)
    return await handler(request)


@web.middleware
async def no_nul(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A NUL (%00) in the path or a query value is no address or search anyone means, and
    PostgreSQL cannot even compare text with one: refused before any handler sees it."""
    if "\x00" in request.path or any("\x00" in v for v in request.query.values()):
        return api_error(400, "the URL holds a NUL (%00)")
    return await handler(request)


class UseClock:
    """When each token was last noted as used, so a busy client costs one write a minute, not one a request."""

    EVERY = 60.0
    MAX_KEYS = 10000

    def __init__(self) -> None:
        self._noted: dict[str, float] = {}

    def due(self, digest: str, now: float) -> bool:
        if now - self._noted.get(digest, 0.0) < self.EVERY:
            return False
        if len(self._noted) >= self.MAX_KEYS:
            self._noted.clear()
        self._noted[digest] = now
        return True


USE_CLOCK = web.AppKey("token_use_clock", UseClock)


async def _note_use(request: web.Request, digest: str) -> None:
    now = time.time()
    if request.config_dict[USE_CLOCK].due(digest, now):
        await request.config_dict[STORE].touch_api_token(digest, now)


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(int(ts), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _scope(request: web.Request) -> int | None:
    """The user whose mail this request may see; None = everyone's."""
    return mail_scope(request_user(request), request.config_dict[SETTINGS])


def whole_number(text: str, max_digits: int = 18) -> int | None:
    """`text` as a number if it is 1 to max_digits ASCII digits (18 always fit a 64-bit id), else None.
    str.isdigit() alone also says yes to "²", which int() refuses."""
    if not (text.isascii() and text.isdigit()) or len(text) > max_digits:
        return None
    return int(text)


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    number = whole_number(raw)
    if number is None or not low <= number <= high:
        raise web.HTTPBadRequest(reason=f"{name}: expected a whole number from {low} to {high}")
    return number


# views

def _counts(c: HitCounts) -> dict[str, Any]:
    return {"opens": c.opens, "human_opens": c.human_opens, "clicks": c.clicks, "human_clicks": c.human_clicks}


def _recipient(r: RecipientReport) -> dict[str, Any]:
    return {"address": r.address, **_counts(r.counts), "first_open_at": rfc3339(r.counts.first_open_at),
            "last_open_at": rfc3339(r.counts.last_open_at), "status": r.status, "tracked": r.tracked,
            "shared": r.shared}


def _message(m: MessageReport) -> dict[str, Any]:
    return {
        "id": m.id, "message_id": m.message_id, "subject": m.subject,
        "sent_at": rfc3339(m.received_at), "delivered_at": rfc3339(m.sent_at), "status": m.status,
        "tracked": {"opens": m.track_opens, "clicks": m.track_clicks},
        **_counts(m.counts),
        "first_open_at": rfc3339(m.counts.first_open_at), "last_open_at": rfc3339(m.counts.last_open_at),
        "recipients": [_recipient(r) for r in m.recipients],
    }


def _link(link: LinkReport) -> dict[str, Any]:
    return {"url": link.url, "clicks": link.clicks, "human_clicks": link.human_clicks, "position": link.position}


def _event(e: EventReport) -> dict[str, Any]:
    return {"type": e.type, "at": rfc3339(e.at), "recipient": e.recipient, "url": e.url, "ip": e.ip,
            "user_agent": e.user_agent, "class": e.cls, "implied": e.implied}


def notification_json(n: Notification) -> dict[str, Any]:
    return {"id": n.id, "type": n.type, "at": rfc3339(n.at), "read": n.read, "recipient": n.recipient,
            "url": n.url, "text": n.text,
            "message": {"id": n.message_id, "message_id": n.message_header_id, "subject": n.subject}}


def policy_json(p: UserPolicy) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": p.mode, "opens": p.opens, "clicks": p.clicks, "notify": p.notify,
                           "sticky": p.sticky, "sticky_choice": None}
    if p.sticky_choice is not None:
        out["sticky_choice"] = dataclasses.asdict(p.sticky_choice)
    return out


# handlers

async def list_messages(request: web.Request) -> web.Response:
    """Newest first; `?tracked=1|0`, `?q=` (subject or recipient), `?limit=` (50, at most 500);
    the next page is `?before=<next>` (keyset: as fast at page 1,000 as at page 1)."""
    tracked_raw = request.query.get("tracked")
    tracked: bool | None = None
    if tracked_raw is not None:
        if tracked_raw.lower() not in ("1", "true", "0", "false"):
            raise web.HTTPBadRequest(reason="tracked: expected 1 or 0")
        tracked = tracked_raw.lower() in ("1", "true")
    limit = int_param(request, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
    offset = int_param(request, "offset", 0, 0, 10**9)
    try:
        before = parse_cursor(request.query["before"]) if "before" in request.query else None
    except ValueError as e:
        raise web.HTTPBadRequest(reason=str(e)) from None
    search = request.query.get("q", "").strip()[:200]
    reports = await request.config_dict[STORE].message_reports(
        _scope(request), tracked=tracked, limit=limit + 1, offset=offset, before=before, search=search)
    page = reports[:limit]
    more = len(reports) > limit
    return json_response({"messages": [_message(m) for m in page],
                          "next": cursor_text((page[-1].received_at, page[-1].id)) if more else None})


def int_id(request: web.Request) -> int:
    """The URL's {id} as a store id; 404 when it cannot be one."""
    number = whole_number(request.match_info["id"])
    if number is None:
        raise web.HTTPNotFound()
    return number


async def report_or_404(request: web.Request, scope: int | None) -> MessageReport:
    """The message named by the URL's {id}, if `scope` (a user id, None = all) may see it."""
    report = await request.config_dict[STORE].message_report(int_id(request), scope)
    if report is None:  # unknown and someone else's look the same
        raise web.HTTPNotFound()
    return report


async def get_message(request: web.Request) -> web.Response:
    report = await report_or_404(request, _scope(request))
    return json_response({**_message(report), "links": [_link(x) for x in report.links],
                          "events": [_event(e) for e in report.events]})


async def _current_policy(request: web.Request) -> UserPolicy:
    stored = await request.config_dict[STORE].policy(request_user(request).id)
    return stored or UserPolicy(mode=request.config_dict[SETTINGS].default_mode)


async def get_policy(request: web.Request) -> web.Response:
    return json_response(policy_json(await _current_policy(request)))


async def put_policy(request: web.Request) -> web.Response:
    body = await json_object(request, '{"mode": "always"}')
    if "mode" in body and not isinstance(body["mode"], str):
        return api_error(400, "mode: expected a string")
    try:
        policy = parse_policy_updates(await _current_policy(request), body)
    except ValueError as e:
        return api_error(400, str(e))
    await request.config_dict[STORE].set_policy(request_user(request).id, policy)
    return json_response(policy_json(policy))
