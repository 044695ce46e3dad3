"""The OpenAPI 3.1 document of /api/v1, served at GET /api/v1/openapi.json (the one API path
that needs no token).

Plain data, built with a few helpers for the shapes that repeat. tests/test_openapi.py runs
schemathesis against a real relay with it: a handler that answers something this document does
not say fails the suite, so keep the two together when either changes.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from admin.api import MAX_LIMIT, OPENAPI_PATH, PAGE_DEFAULT, PAGE_MAX, json_response
from admin.sessions import SESSION_COOKIE
from admin.tokens_api import MAX_NAME
from relay.classify import CLASSES
from relay.notify_payloads import KINDS
from relay.notify_rules import EVENT_TYPES
from relay.policy import MODES
from relay.status import FINAL, PENDING
from relay.webhook_spec import EVENTS, MAX_URL

Schema = dict[str, Any]

RECIPIENT_STATUSES = (*PENDING, *FINAL)
MESSAGE_STATUSES = (*RECIPIENT_STATUSES, "partial")  # some recipients sent, some bounced
MAX_BODY = 1024 ** 2  # aiohttp's client_max_size: a larger body answers 413


def add_routes(api: web.Application) -> None:
    api.router.add_get("/openapi.json", serve)


async def serve(request: web.Request) -> web.Response:
    return json_response(DOCUMENT)


# schema helpers

def closed(required: Schema, optional: Schema | None = None) -> Schema:
    """An object with exactly these keys (`optional` ones may be missing)."""
    return {"type": "object", "properties": {**required, **(optional or {})}, "required": list(required),
            "additionalProperties": False}


def nullable(schema: Schema) -> Schema:
    return {**schema, "type": [schema["type"], "null"]}


def array(items: Schema, **limits: Any) -> Schema:
    return {"type": "array", "items": items, **limits}


def enum(values: tuple[str, ...]) -> Schema:
    return {"type": "string", "enum": list(values)}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


STRING = {"type": "string"}
BOOL = {"type": "boolean"}
COUNT = {"type": "integer", "minimum": 0}
ID = {"type": "integer", "minimum": 1}
INT64 = {"type": "integer", "minimum": -2**63, "maximum": 2**63 - 1}  # JSON numbers beyond are a 400
TIME = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC"}
FLAG = {"type": "string", "enum": ["1", "0", "true", "false"]}
DURATION = {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d|w)?\s*$", "examples": ["15m", "3d"]}

COUNTS = {"opens": COUNT, "human_opens": COUNT, "clicks": COUNT, "human_clicks": COUNT}
TRACKED = closed({"opens": BOOL, "clicks": BOOL})

SCHEMAS: dict[str, Schema] = {
    "Error": closed({"error": STRING}),
    "Recipient": closed({
        "address": STRING, **COUNTS, "first_open_at": nullable(TIME), "last_open_at": nullable(TIME),
        "status": enum(RECIPIENT_STATUSES), "tracked": BOOL,
        "shared": {**BOOL, "description": "the copy went to several recipients: its counts are that copy's"},
    }),
    "Message": closed({
        "id": ID, "message_id": STRING, "subject": STRING,
        "sent_at": {**TIME, "description": "when the relay accepted the mail"},
        "delivered_at": {**nullable(TIME), "description": "the first delivery to any recipient"},
        "status": enum(MESSAGE_STATUSES), "tracked": TRACKED, **COUNTS,
        "first_open_at": nullable(TIME), "last_open_at": nullable(TIME), "recipients": array(ref("Recipient")),
    }),
    "Link": closed({"url": STRING, "clicks": COUNT, "human_clicks": COUNT, "position": COUNT}),
    "Event": closed({
        "type": enum(("open", "click")), "at": TIME,
        "recipient": {**nullable(STRING), "description": "null when the copy went to several recipients"},
        "url": nullable(STRING), "ip": STRING,
        "user_agent": {**STRING, "description": "exactly as received"},
        "class": enum(CLASSES),
        "implied": {**BOOL, "description": "an open implied by a click on a copy with no open seen"},
    }),
    "Notification": closed({
        "id": ID, "type": enum(("open", "click", "unopened", "webhook")), "at": TIME, "read": BOOL,
        "recipient": nullable(STRING), "url": nullable(STRING), "text": STRING,
        "message": closed({"id": nullable(ID), "message_id": STRING, "subject": STRING}),
    }),
    "Policy": closed({
        "mode": enum(MODES), "opens": BOOL, "clicks": BOOL, "notify": BOOL, "sticky": BOOL,
        "sticky_choice": {**nullable(closed({"opens": nullable(BOOL), "clicks": nullable(BOOL),
                                             "text_links": BOOL})),
                          "description": "the last explicit per-message choice, the default while sticky"},
    }),
    "Token": closed({"id": ID, "name": STRING, "created_at": TIME, "last_used_at": nullable(TIME)}),
    "Webhook": closed({
        "id": ID, "url": STRING, "kind": enum(KINDS), "events": array(enum(EVENTS), minItems=1, uniqueItems=True),
        "humans_only": BOOL, "first_only": BOOL, "unopened_after": STRING,
        "digest": {**STRING, "description": "a period such as 15m, or empty: each event at once"},
        "enabled": BOOL, "created_at": TIME, "failing_since": nullable(TIME),
    }),
    "Attempt": closed({"at": TIME, "status_code": nullable({"type": "integer"}), "latency_ms": {"type": "number"},
                       "error": STRING}),
    "Delivery": closed({
        "id": {**STRING, "description": "the event id, the same on every retry"},
        "status": enum(("queued", "sent", "failed")), "attempts": COUNT, "last_error": STRING,
        "created_at": TIME, "next_attempt_at": {**nullable(TIME), "description": "while queued"},
        "event": closed({
            "type": enum(tuple(EVENT_TYPES.values())), "occurred_at": TIME,
            "message_id": STRING, "message_header_id": STRING, "subject": STRING, "recipient": STRING,
            "url": STRING, "hit_class": enum(("", *CLASSES)),
        }),
        "tries": array(ref("Attempt")),
    }),
    "PrivacyRecord": closed(
        {"entry": STRING, "recorded_at": TIME, "recorded_by": nullable(STRING), "source": nullable(STRING)},
        {"given_at": {**TIME, "description": "consent: when the person gave it, if known"}}),
}
SCHEMAS["MessageDetail"] = closed({
    **SCHEMAS["Message"]["properties"], "links": array(ref("Link")), "events": array(ref("Event"))})
SCHEMAS["NewToken"] = closed({
    **SCHEMAS["Token"]["properties"], "token": {**STRING, "description": "the token's value, shown this once"}})
SCHEMAS["NewWebhook"] = closed(SCHEMAS["Webhook"]["properties"],
                               {"secret": {**STRING, "description": "json kind: the signing secret, shown once"}})

SUBJECT_MAIL = closed({
    "id": ID, "message_id": STRING, "subject": STRING, "sender": STRING, "received_at": TIME,
    "status": enum(RECIPIENT_STATUSES), "delivered_at": nullable(TIME), "tracked": TRACKED,
    "events": array(closed({"type": enum(("open", "click")), "at": TIME, "class": enum(CLASSES), "ip": STRING,
                            "user_agent": STRING, "url": nullable(STRING), "shared_copy": BOOL})),
})
SUBJECT = closed({
    "address": STRING, "generated_at": TIME, "mails": array(SUBJECT_MAIL),
    "do_not_track": array(ref("PrivacyRecord")), "consent": array(ref("PrivacyRecord")),
    "notifications": array(closed({"at": TIME, "text": STRING})), "captured_copies": COUNT,
})
ERASURE = closed({
    "address": STRING, "kept_trackable": BOOL,
    **{k: COUNT for k in ("messages", "copies", "recipients", "events", "links", "notifications", "deliveries",
                          "captured")},
    "still_queued": {**COUNT, "description": "mail to them not delivered yet: erase again once it is"},
})

WEBHOOK_FIELDS = {
    "url": {"type": "string", "format": "uri", "maxLength": MAX_URL,
            "description": "http(s), resolving to public addresses unless notify.allow_private_targets"},
    "kind": {**enum(KINDS), "default": "json"},
    "events": {**array(enum(EVENTS), minItems=1), "default": ["open", "click"]},
    "humans_only": {**BOOL, "default": True}, "first_only": {**BOOL, "default": True},
    "unopened_after": {**DURATION, "default": "3d"},
    "digest": {"anyOf": [DURATION, {"const": ""}, {"type": "null"}], "default": ""},
    "enabled": {**BOOL, "default": True},
}


# operations

ERRORS = {
    400: "bad input (the message names the parameter or field)",
    401: "no token, or an unknown or revoked one",
    403: "for admins only",
    404: "no such thing (another user's looks the same)",
    413: f"the body is larger than {MAX_BODY} bytes",
    429: "too many open streams",
    503: "the store is unavailable: try again",
}
ERROR_HEADERS = {
    401: {"WWW-Authenticate": {"required": True, "schema": STRING}},
    429: {"Retry-After": {"required": True, "schema": STRING}},
    503: {"Retry-After": {"required": True, "schema": STRING}},
}


def error(status: int) -> Schema:
    answer = {"description": ERRORS[status], "content": {"application/json": {"schema": ref("Error")}}}
    if status in ERROR_HEADERS:
        answer["headers"] = ERROR_HEADERS[status]
    return answer


def ok(schema: Schema, description: str = "OK") -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


NO_CONTENT = {"description": "done; no body"}


def op(summary: str, answers: dict[int, Schema], *errors: int, params: list[Schema] | None = None,
       body: Schema | None = None) -> Schema:
    """An operation: its answers, then the errors it can give besides 400 (a NUL in the URL, say),
    401 and 503, which any can; 413 with a body."""
    codes = sorted({*errors, 400, 401, 503, *((413,) if body else ())})
    out: Schema = {"summary": summary, "responses": {
        **{str(s): a for s, a in answers.items()}, **{str(s): error(s) for s in codes}}}
    if params:
        out["parameters"] = params
    if body:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return out


def query(name: str, schema: Schema, description: str = "") -> Schema:
    return {"name": name, "in": "query", "schema": schema, **({"description": description} if description else {})}


def path(name: str, schema: Schema = ID) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def listing(key: str, item: Schema) -> Schema:
    return closed({key: array(item)})


def privacy_paths(kind: str, entry: Schema) -> dict[str, Schema]:
    """The do-not-track or consent list: list, add, remove (admins)."""
    what = "do-not-track" if kind == "dnt" else "consent"
    added = closed({"entry": STRING, "added": BOOL})
    return {
        f"/api/v1/privacy/{kind}": {
            "get": op(f"the {what} list with who recorded each entry, when and from where",
                      {200: ok(closed({"entries": array(STRING), "records": array(ref("PrivacyRecord"))}))}, 403),
            "post": op(f"add to the {what} list (lower-cased)",
                       {201: ok(added, "added"), 200: ok(added, "already listed")}, 403,
                       body={"type": "object", "properties": {"entry": entry}, "required": ["entry"]}),
        },
        f"/api/v1/privacy/{kind}/{{entry}}": {
            "delete": op(f"remove from the {what} list", {204: NO_CONTENT}, 403, 404,
                         params=[path("entry", entry)]),
        },
    }


ADDRESS = {"type": "string", "format": "email", "examples": ["bob@example.org"]}
DNT_ENTRY = {"anyOf": [ADDRESS, {"type": "string", "pattern": r"^@[^@\s]+\.[^@\s]+$", "examples": ["@example.org"]}]}
WEBHOOK_ID = [path("id")]

PATHS: dict[str, Schema] = {
    OPENAPI_PATH: {"get": {"summary": "this document", "security": [],
                   "responses": {"200": ok({"type": "object"}, "the OpenAPI document")}}},
    "/api/v1/messages": {"get": op(
        "the user's messages, newest first", {200: ok(closed({
            "messages": array(ref("Message")),
            "next": {**nullable(STRING), "description": "the next page's `before`, or null on the last page"}}))},
        params=[
            query("tracked", FLAG, "only tracked (1) or untracked (0) mail"),
            query("q", STRING, "a search over subjects and recipients (any case)"),
            query("limit", {"type": "integer", "minimum": 1, "maximum": PAGE_MAX, "default": PAGE_DEFAULT}),
            query("offset", {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0}),
            query("before", STRING, "a cursor: the `next` of the page before"),
        ])},
    "/api/v1/messages/{id}": {"get": op(
        "one message with its links (by position) and events", {200: ok(ref("MessageDetail"))}, 404,
        params=[path("id")])},
    "/api/v1/notifications": {"get": op(
        "the user's in-app notifications, newest first", {200: ok(listing("notifications", ref("Notification")))},
        params=[query("unread", FLAG, "only unread ones (1)"),
                     query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100})])},
    "/api/v1/notifications/read": {"post": op(
        "mark the user's own notifications read (others' ids mark nothing)",
        {200: ok(closed({"marked": COUNT, "unread": COUNT}))},
        body={"oneOf": [closed({"ids": array(INT64, maxItems=MAX_LIMIT)}),
                        closed({"all": {"const": True}})]})},
    "/api/v1/notifications/stream": {"get": {
        **op("Server-Sent Events: `unread` with the count at once, then each new `notification` (its id as the"
             " event id); a comment line every 15 s",
             {200: {"description": "an endless event stream",
                    "content": {"text/event-stream": {"schema": STRING}}}}, 429,
             params=[{"name": "Last-Event-ID", "in": "header", "schema": STRING,
                      "description": "resume after this notification id"}]),
        "security": [{"bearer": []}, {"panelSession": []}]}},
    "/api/v1/policy": {
        "get": op("the user's tracking policy", {200: ok(ref("Policy"))}),
        "put": op("change the fields given", {200: ok(ref("Policy"))}, body=closed({}, {
            "mode": enum(MODES), "opens": BOOL, "clicks": BOOL, "notify": BOOL, "sticky": BOOL,
            "sticky_choice": {**nullable(STRING), "description": "X-Track words (on, off, opens, clicks), or none"},
        })),
    },
    "/api/v1/tokens": {
        "get": op("the user's API tokens (never their values)", {200: ok(listing("tokens", ref("Token")))}),
        "post": op("a new token; its value is in this answer only", {201: ok(ref("NewToken"), "created")},
                   body={"type": "object", "required": ["name"], "properties": {
                       "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME, "pattern": r"\S"}}}),
    },
    "/api/v1/tokens/{id}": {"delete": op(
        "delete one of the user's tokens: it answers 401 from then on", {204: NO_CONTENT}, 404,
        params=[path("id")])},
    "/api/v1/webhooks": {
        "get": op("the user's webhooks", {200: ok(listing("webhooks", ref("Webhook")))}),
        "post": op("a new webhook", {201: ok(ref("NewWebhook"), "created")},
                   body=closed({"url": WEBHOOK_FIELDS["url"]}, WEBHOOK_FIELDS)),
    },
    "/api/v1/webhooks/{id}": {
        "get": op("one webhook", {200: ok(ref("Webhook"))}, 404, params=WEBHOOK_ID),
        "patch": op("change the fields given", {200: ok(ref("Webhook"))}, 404, params=WEBHOOK_ID,
                    body=closed({}, WEBHOOK_FIELDS)),
        "delete": op("delete a webhook", {204: NO_CONTENT}, 404, params=WEBHOOK_ID),
    },
    "/api/v1/webhooks/{id}/test": {"post": op(
        "send a sample message.opened now; answers the attempt",
        {200: ok(closed({"delivered": BOOL, **SCHEMAS["Attempt"]["properties"]}))}, 404, params=WEBHOOK_ID)},
    "/api/v1/webhooks/{id}/deliveries": {"get": op(
        "the last 100 deliveries with their event and every attempt",
        {200: ok(listing("deliveries", ref("Delivery")))}, 404, params=WEBHOOK_ID)},
    **privacy_paths("dnt", DNT_ENTRY),
    **privacy_paths("consent", ADDRESS),
    "/api/v1/privacy/subjects/{address}": {
        "get": op("everything held about an address (an access request)", {200: ok(SUBJECT)}, 403,
                  params=[path("address", ADDRESS)]),
        "delete": op("erase everything about an address (an erasure request)", {200: ok(ERASURE)}, 403,
                     params=[path("address", ADDRESS),
                             query("keep_trackable", FLAG, "1: leave them off the do-not-track list")]),
    },
}

DOCUMENT: Schema = {
    "openapi": "3.1.0",
    "info": {
        "title": "trackrelay API", "version": "1",
        "description": "The JSON API of the admin listener. Every error is `{\"error\": \"...\"}`; a method a"
                       " path does not have answers 405 with `Allow`, an unknown path 404. Times are RFC 3339"
                       " UTC. A user sees only their own mail.",
    },
    "security": [{"bearer": []}],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "`trackrelay token create EMAIL`, or POST /api/v1/tokens"},
            "panelSession": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                             "description": "the web panel's session (the bell's stream only)"},
        },
    },
}
