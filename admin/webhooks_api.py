"""/api/v1/webhooks: a user's webhooks, a test send, and the delivery log (DESIGN "Webhooks").

Per-user: another user's webhook is a 404, as is an unknown one. A json webhook's signing
secret is shown once, in the answer that creates it.
"""
from __future__ import annotations

import json
import secrets
import time
from typing import Any

from aiohttp import web

from admin.api import api_error, int_id, json_object, json_response, rfc3339
from admin.keys import SETTINGS, STORE, AdminSettings, request_user
from relay import webhook_client
from relay.notify_payloads import render
from relay.notify_rules import sample_event
from relay.records import Attempt, DeliveryReport, Webhook, WebhookSpec
from relay.webhook_spec import format_duration, parse_spec
from relay.webhook_target import Refused, check_url, resolve_and_check

ROUTE = "/webhooks"


def add_routes(api: web.Application) -> None:
    api.router.add_get(ROUTE, list_webhooks)
    api.router.add_post(ROUTE, create_webhook)
    api.router.add_get(ROUTE + "/{id}", get_webhook)
    api.router.add_patch(ROUTE + "/{id}", patch_webhook)
    api.router.add_delete(ROUTE + "/{id}", delete_webhook)
    api.router.add_post(ROUTE + "/{id}/test", send_test)
    api.router.add_get(ROUTE + "/{id}/deliveries", list_deliveries)


def webhook_json(w: Webhook) -> dict[str, Any]:
    s = w.spec
    return {"id": w.id, "url": s.url, "kind": s.kind, "events": list(s.events), "humans_only": s.humans_only,
            "first_only": s.first_only, "unopened_after": format_duration(s.unopened_after),
            "digest": format_duration(s.digest), "enabled": s.enabled, "created_at": rfc3339(w.created_at),
            "failing_since": rfc3339(w.failing_since)}


def attempt_json(a: Attempt) -> dict[str, Any]:
    return {"at": rfc3339(a.at), "status_code": a.status_code, "latency_ms": round(a.latency * 1000, 1),
            "error": a.error}


def delivery_json(d: DeliveryReport) -> dict[str, Any]:
    return {"id": d.id, "status": d.status, "attempts": d.attempts, "last_error": d.last_error,
            "created_at": rfc3339(d.created_at), "next_attempt_at": rfc3339(d.due_at) if d.status == "queued" else None,
            "event": json.loads(d.payload), "tries": [attempt_json(a) for a in d.tries]}


async def _body(request: web.Request) -> dict[str, Any]:
    return await json_object(request, '{"url": "https://..."}')


async def checked_spec(body: dict[str, Any], base: WebhookSpec | None, allow_private: bool) -> WebhookSpec:
    """The spec a body asks for, its target resolved and allowed; ValueError says why not
    (the API and the panel's settings both create webhooks through this)."""
    spec = parse_spec(body, base)
    if base is None or spec.url != base.url:  # a new target: it must resolve to allowed addresses
        target = check_url(spec.url)
        assert not isinstance(target, Refused)  # parse_spec checked it
        found = await resolve_and_check(target.host, target.port, allow_private)
        if isinstance(found, Refused):
            raise ValueError(f"url: {found.reason}")
    return spec


async def add_webhook(store: Any, user_id: int, spec: WebhookSpec) -> tuple[Webhook, str]:
    """The new webhook and its signing secret (json kind only; "" for chat kinds)."""
    secret = "whsec_" + secrets.token_urlsafe(32) if spec.kind == "json" else ""
    return await store.add_webhook(user_id, spec, secret, time.time()), secret


async def send_sample(hook: Webhook, settings: AdminSettings) -> tuple[bool, Attempt]:
    """A sample event, sent now and not through the outbox: whether it was delivered, and the attempt."""
    now = time.time()
    event = sample_event(now, settings.panel_url)
    body, headers = render(hook.spec.kind, event, secret=hook.secret, t=int(now))
    result = await webhook_client.post(hook.spec.url, body, headers, allow_private=settings.allow_private_targets,
                                       timeout=settings.webhook_timeout)
    return result.delivered, Attempt(event.id, now, result.status, result.latency, result.error)


async def _spec(request: web.Request, base: WebhookSpec | None) -> WebhookSpec | web.Response:
    try:
        return await checked_spec(await _body(request), base, request.config_dict[SETTINGS].allow_private_targets)
    except ValueError as e:
        return api_error(400, str(e))


async def _own(request: web.Request) -> Webhook:
    hook = await request.config_dict[STORE].webhook(int_id(request), request_user(request).id)
    if hook is None:  # unknown and someone else's look the same
        raise web.HTTPNotFound()
    return hook


async def list_webhooks(request: web.Request) -> web.Response:
    hooks = await request.config_dict[STORE].webhooks(request_user(request).id)
    return json_response({"webhooks": [webhook_json(w) for w in hooks]})


async def create_webhook(request: web.Request) -> web.Response:
    spec = await _spec(request, None)
    if isinstance(spec, web.Response):
        return spec
    hook, secret = await add_webhook(request.config_dict[STORE], request_user(request).id, spec)
    extra = {"secret": secret} if secret else {}
    return json_response({**webhook_json(hook), **extra}, 201)


async def get_webhook(request: web.Request) -> web.Response:
    return json_response(webhook_json(await _own(request)))


async def patch_webhook(request: web.Request) -> web.Response:
    hook = await _own(request)
    spec = await _spec(request, hook.spec)
    if isinstance(spec, web.Response):
        return spec
    if spec.kind == "json" and not hook.secret:
        return api_error(400, "kind: a chat webhook cannot become json (it has no secret): create a new one")
    store = request.config_dict[STORE]
    await store.update_webhook(hook.id, hook.user_id, spec)
    return json_response(webhook_json(await _own(request)))


async def delete_webhook(request: web.Request) -> web.Response:
    hook = await _own(request)
    await request.config_dict[STORE].delete_webhook(hook.id, hook.user_id)
    return web.Response(status=204)


async def send_test(request: web.Request) -> web.Response:
    """A sample event, sent now and not through the outbox: the answer is the attempt."""
    delivered, attempt = await send_sample(await _own(request), request.config_dict[SETTINGS])
    return json_response({"delivered": delivered, **attempt_json(attempt)})


async def list_deliveries(request: web.Request) -> web.Response:
    hook = await _own(request)
    found = await request.config_dict[STORE].deliveries(hook.id)
    return json_response({"deliveries": [delivery_json(d) for d in found]})
