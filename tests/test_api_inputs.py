"""/api/v1 given input no store can hold (found by tests/test_openapi.py's fuzzing, and by
probing around its finds): numbers beyond any id, digits that are not ASCII, JSON's NaN, NUL
and lone surrogates. Each is the client's mistake: a 4xx naming it, never a 500 (SQLite) or a
503 that says to try again (PostgreSQL)."""
from __future__ import annotations

import aiohttp

from conftest import add_user, both_engines
from hits_helpers import start_relay
from test_api import api, token_for
from test_webhooks_e2e import FAST

pytestmark = both_engines

HUGE = "99999999999999999999"  # beyond a 64-bit integer
SUPERSCRIPT_TWO = "%C2%B2"  # "²": str.isdigit() says yes, int() says no


async def test_ids_that_no_row_can_have_are_not_found(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink)
    token = await token_for(app)
    async with aiohttp.ClientSession() as s:
        for path in (f"/api/v1/tokens/{HUGE}", f"/api/v1/tokens/{SUPERSCRIPT_TWO}"):
            assert (await api(s, app, path, token, method="DELETE"))[:2] == (404, {"error": "not found"})
        for path in (f"/api/v1/messages/{SUPERSCRIPT_TWO}", f"/api/v1/webhooks/{SUPERSCRIPT_TWO}",
                     f"/api/v1/webhooks/{SUPERSCRIPT_TWO}/deliveries"):
            assert (await api(s, app, path, token))[:2] == (404, {"error": "not found"})


async def test_marking_ids_that_no_row_can_have_marks_nothing(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink)
    token = await token_for(app)
    async with aiohttp.ClientSession() as s:
        status, body, _ = await api(s, app, "/api/v1/notifications/read", token, method="POST",
                                    body={"ids": [2**63 - 1, -2**63, 0]})
        assert (status, body) == (200, {"marked": 0, "unread": 0})


async def test_number_parameters_take_ascii_digits_only(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink)
    token = await token_for(app)
    async with aiohttp.ClientSession() as s:
        for path in ("/api/v1/messages", "/api/v1/notifications"):
            for limit in (SUPERSCRIPT_TWO, "1" + "0" * 5000):
                status, body, _ = await api(s, app, f"{path}?limit={limit}", token)
                assert status == 400 and body["error"].startswith("limit:")
        async with s.get(f"http://127.0.0.1:{app.port('admin')}/api/v1/notifications/stream",
                         headers={"Authorization": f"Bearer {token}", "Last-Event-ID": "\u00b2"}) as resp:
            assert resp.status == 200  # not an id: the stream starts from now


async def test_json_beyond_what_a_store_holds_is_refused(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink, **FAST)
    await add_user(app, "root@example.com", admin=True)
    token, root = await token_for(app), await token_for(app, "root@example.com")
    async with aiohttp.ClientSession() as s:
        _, hook, _ = await api(s, app, "/api/v1/webhooks", token, method="POST",
                               body={"url": "http://127.0.0.1:9/hook"})
        for path, user, method, raw in (
                (f"/api/v1/webhooks/{hook['id']}", token, "PATCH", b'{"digest": NaN}'),
                (f"/api/v1/webhooks/{hook['id']}", token, "PATCH", b'{"unopened_after": -Infinity}'),
                ("/api/v1/tokens", token, "POST", b'{"name": "\\ud800"}'),
                ("/api/v1/tokens", token, "POST", b'{"name": "a\\u0000b"}'),
                ("/api/v1/privacy/dnt", root, "POST", b'{"entry": "\\udfff@example.org"}'),
                ("/api/v1/privacy/consent", root, "POST", b'{"entry": "a\\u0000@example.org"}'),
                ("/api/v1/policy", token, "PUT", b"[" * 100_000 + b"]" * 100_000),
                ("/api/v1/webhooks", token, "POST", b'{"url": "http://127.0.0.1:9/", "digest": 1e400}'),
                ("/api/v1/webhooks", token, "POST", b'{"url": "http://127.0.0.1:9/", "digest": 1' + b"0" * 400 + b"}"),
                ("/api/v1/notifications/read", token, "POST", b'{"ids": [18446744073709551616]}')):
            status, body, _ = await api(s, app, path, user, method=method, raw=raw)
            assert status == 400 and body["error"], (path, raw[:50], status, body)


async def test_nul_in_a_path_or_query_is_refused(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink)
    await add_user(app, "root@example.com", admin=True)
    root = await token_for(app, "root@example.com")
    async with aiohttp.ClientSession() as s:
        for method, path in (("GET", "/api/v1/messages?q=%00"), ("GET", "/api/v1/privacy/subjects/a%00@example.org"),
                             ("DELETE", "/api/v1/privacy/subjects/a%00@example.org"),
                             ("DELETE", "/api/v1/privacy/dnt/%00@example.org")):
            status, body, _ = await api(s, app, path, root, method=method)
            assert status == 400 and "NUL" in body["error"], (path, status, body)
