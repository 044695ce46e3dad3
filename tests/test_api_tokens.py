"""/api/v1/tokens: create (the value shown once), list by name and last use, revoke (then 401)."""
from __future__ import annotations

import aiohttp

from conftest import add_user, both_engines
from hits_helpers import start_relay
from test_api import api, token_for


@both_engines
async def test_a_token_made_over_the_api_works_is_listed_and_once_deleted_answers_401(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink)
    first = await token_for(app)
    async with aiohttp.ClientSession() as s:
        status, made, _ = await api(s, app, "/api/v1/tokens", first, method="POST", body={"name": "  laptop "})
        assert status == 201 and made["name"] == "laptop" and made["token"].startswith("trk_")
        assert made["last_used_at"] is None and made["created_at"].endswith("Z")
        status, _, _ = await api(s, app, "/api/v1/messages", made["token"])
        assert status == 200
        _, listed, _ = await api(s, app, "/api/v1/tokens", first)
        [mine] = [t for t in listed["tokens"] if t["id"] == made["id"]]
        assert set(mine) == {"id", "name", "created_at", "last_used_at"}  # never the value again
        assert mine["name"] == "laptop" and mine["last_used_at"] is not None
        assert len(listed["tokens"]) == 2
        async with s.delete(f"http://127.0.0.1:{app.port('admin')}/api/v1/tokens/{made['id']}",
                            headers={"Authorization": f"Bearer {first}"}) as deleted:
            assert deleted.status == 204
        status, body, _ = await api(s, app, "/api/v1/messages", made["token"])
        assert status == 401 and body["error"]


async def test_tokens_are_per_user_and_names_are_checked(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink)
    alice = await token_for(app)
    await add_user(app, "bob@example.com")
    bob = await token_for(app, "bob@example.com")
    async with aiohttp.ClientSession() as s:
        _, made, _ = await api(s, app, "/api/v1/tokens", alice, method="POST", body={"name": "ci"})
        _, listed, _ = await api(s, app, "/api/v1/tokens", bob)
        assert made["id"] not in [t["id"] for t in listed["tokens"]]
        status, body, _ = await api(s, app, f"/api/v1/tokens/{made['id']}", bob, method="DELETE")
        assert status == 404 and body["error"]
        status, _, _ = await api(s, app, "/api/v1/messages", made["token"])
        assert status == 200  # bob could not revoke it
        for bad in ({}, {"name": ""}, {"name": 7}, {"name": "x" * 101}, []):
            status, body, _ = await api(s, app, "/api/v1/tokens", alice, method="POST", body=bad)
            assert status == 400 and "name" in body["error"]
        status, body, _ = await api(s, app, "/api/v1/tokens", alice, method="POST", raw=b"{nope")
        assert status == 400
        status, _, _ = await api(s, app, "/api/v1/tokens/not-a-number", alice, method="DELETE")
        assert status == 404
