"""/api/v1 against its OpenAPI document (admin/openapi.py).

schemathesis makes requests from the document for every operation, valid ones and invalid ones,
and sends them to a real relay holding real mail, hits, notifications, webhooks and privacy
entries, as a user and as an admin. Every answer must be documented (status code, content type,
headers, body schema), none may be a 5xx, and an operation must refuse a request without its
token. Offline: a webhook target in a request is pointed at a local receiver, or at an address
refused before any DNS lookup or connection.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import hypothesis
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from admin import make_admin_app
from admin.api import OPENAPI_PATH
from admin.openapi import DOCUMENT
from admin.sessions import STREAM_PATH
from conftest import add_user
from hits_helpers import CHROME, THUNDERBIRD, deliver_tracked, events, hit, start_relay
from relay.auth import new_api_token, token_hash
from relay.metrics import Metrics
from test_api import READER, api, token_for
from test_notifications_api import next_event
from test_webhooks_e2e import FAST, receiver  # noqa: F401  (the receiver fixture)

EXAMPLES = 25  # per operation: the whole run stays well under a minute on two cores
FUZZ = hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None,
                           phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, ignored_auth]
REFUSED_HOST = "169.254.169.254"  # a cloud metadata address: refused at once, no lookup, no connection


def offline(url: str, host: str) -> str:
    """An http(s) URL sent to `host` instead; anything else is refused before any lookup anyway."""
    try:
        parts = urlsplit(url)
        parts.port
    except ValueError:
        return url
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return url
    return urlunsplit(parts._replace(netloc=host))


def fuzz(operation: Any, base_url: str, tokens: list[str], fresh_token: Callable[[], tuple[int, str]],
         receiver_host: str) -> None:
    """Generated requests for one operation, each checked against the document; raises on the first failure."""
    cases = st.one_of(operation.as_strategy(), operation.as_strategy(GenerationMode.NEGATIVE))

    @FUZZ
    @given(case=cases, token=st.sampled_from(tokens), to_receiver=st.booleans(), known_id=st.booleans())
    def run(case: Any, token: str, to_receiver: bool, known_id: bool) -> None:
        if isinstance(case.body, dict) and isinstance(case.body.get("url"), str):
            case.body["url"] = offline(case.body["url"], receiver_host if to_receiver else REFUSED_HOST)
        if known_id and "id" in (case.path_parameters or {}):  # random ids are almost all 404s
            case.path_parameters["id"] = 1  # the test's first message and webhook
        if operation.path == "/api/v1/tokens/{id}":  # it may delete the token it uses: never a shared one
            token_id, token = fresh_token()
            if known_id:
                case.path_parameters["id"] = token_id
        case.call_and_validate(base_url=base_url, headers={"Authorization": f"Bearer {token}"},
                               checks=CHECKS, timeout=10)

    run()


async def test_every_operation_answers_as_documented(sink, start_app, tmp_path, receiver):
    app = await start_relay(start_app, tmp_path, sink, **FAST)
    alice = await token_for(app)
    await add_user(app, "root@example.com", admin=True)
    root = await token_for(app, "root@example.com")
    async with aiohttp.ClientSession() as s:
        # something to show: a webhook, tracked mail with opens and clicks, notifications, privacy entries
        status, _, _ = await api(s, app, "/api/v1/webhooks", alice, method="POST", body={"url": receiver.url})
        assert status == 201
        copies = await deliver_tracked(app, sink, ("bob@example.org", "carol@example.org"))
        for copy in copies.values():
            await hit(s, app, copy.pixel, ua=THUNDERBIRD, ip=READER)
        await hit(s, app, copies["bob@example.org"].clicks[1], ua=CHROME, ip=READER)
        await events(app, tmp_path, 3)
        await receiver.wait_for(3)
        for kind, entry in (("dnt", "@example.net"), ("consent", "carol@example.org")):
            status, _, _ = await api(s, app, f"/api/v1/privacy/{kind}", root, method="POST", body={"entry": entry})
            assert status == 201
    carol = await add_user(app, "carol@example.com")  # her tokens are made to be deleted
    loop = asyncio.get_running_loop()

    def fresh_token() -> tuple[int, str]:
        value = new_api_token()
        made = asyncio.run_coroutine_threadsafe(app.store.add_api_token(carol.id, token_hash(value)), loop).result()
        return made.id, value

    def run_all() -> list[str]:
        base_url = f"http://127.0.0.1:{app.port('admin')}"
        schema = schemathesis.openapi.from_url(base_url + OPENAPI_PATH)  # no token: it needs none
        operations = [result.ok() for result in schema.get_all_operations()]
        # the stream never ends (tested below); deletions last, so the others find things to show
        operations = sorted((o for o in operations if o.path != STREAM_PATH), key=lambda o: o.method == "delete")
        failures = []
        for operation in operations:
            try:
                fuzz(operation, base_url, [alice, root], fresh_token, f"127.0.0.1:{receiver.port}")
            except (Exception, FailureGroup) as e:  # each operation's first failure, not only the first one's
                failures.append(f"{operation.method.upper()} {operation.path}: {e}")
        return failures

    failures = await asyncio.to_thread(run_all)  # requests is blocking: the relay keeps this loop
    assert not failures, "\n\n".join(failures)


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
