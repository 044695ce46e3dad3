"""/api/v1 against its OpenAPI document (admin/openapi.py): served without a token, valid
OpenAPI 3.1, naming every route the API has."""
from __future__ import annotations

import json

import aiohttp
import schemathesis

from admin import make_admin_app
from admin.api import OPENAPI_PATH
from admin.openapi import DOCUMENT
from admin.sessions import STREAM_PATH
from hits_helpers import start_relay
from relay.metrics import Metrics
from test_api import token_for
from test_notifications_api import next_event


async def test_the_stream_is_an_event_stream_and_wants_a_token(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink)
    token = await token_for(app)
    url = f"http://127.0.0.1:{app.port('admin')}{STREAM_PATH}"
    async with aiohttp.ClientSession() as s:
        async with s.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            documented = DOCUMENT["paths"][STREAM_PATH]["get"]["responses"]["200"]["content"]
            assert resp.status == 200 and resp.content_type in documented
            assert await next_event(resp) == ("unread", None, {"unread": 0})
        async with s.get(url) as resp:
            assert resp.status == 401 and set(await resp.json()) == {"error"}


async def test_the_document_needs_no_token_and_names_every_api_route(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{app.port('admin')}{OPENAPI_PATH}") as resp:
            assert resp.status == 200 and resp.content_type == "application/json"
            assert json.loads(await resp.text()) == DOCUMENT
    schemathesis.openapi.from_dict(DOCUMENT).validate()  # against the OpenAPI 3.1 meta-schema
    [api_app] = [r.get_info()["app"] for r in make_admin_app(app.store, Metrics()).router.resources()
                 if r.get_info().get("prefix") == "/api/v1"]
    routes = set()
    for route in api_app.router.routes():
        for kind in ("dnt", "consent") if "{kind" in route.resource.canonical else ("",):
            routes.add((route.method.lower(), route.resource.canonical.replace("{kind}", kind)))
    documented = {(method, path) for path, item in DOCUMENT["paths"].items() for method in item}
    assert {(m, p) for m, p in routes if m != "head"} == documented
