"""/api/v1 given input no store can hold (found by fuzzing the API with schemathesis): numbers
beyond any id, digits that are not ASCII. Each is the client's mistake: a 4xx naming it, never
a 500 (SQLite) or a 503 that says to try again (PostgreSQL)."""
from __future__ import annotations

import aiohttp

from conftest import both_engines
from hits_helpers import start_relay
from test_api import api, token_for

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

