"""/api/v1/webhooks: per-user CRUD, the secret shown once, the SSRF check at creation, a
test send to a real receiver, and the delivery log."""
from __future__ import annotations

import time

import aiohttp

from hits_helpers import CHROME, READER_IP, deliver_tracked, hit, start_relay, wait_until
from relay.notify_payloads import verify
from test_api import api, token_for
from test_webhooks_e2e import FAST, receiver  # noqa: F401  (the receiver fixture)


async def test_create_list_patch_delete_scoped_to_the_owner(sink, start_app, tmp_path, receiver):
    app = await start_relay(start_app, tmp_path, sink, **FAST)
    alice, mallory = await token_for(app), await token_for(app, "mallory@example.com")
    async with aiohttp.ClientSession() as s:
        status, made, _ = await api(s, app, "/api/v1/webhooks", alice, method="POST",
                                    body={"url": receiver.url, "events": ["open"], "digest": "15m"})
        assert status == 201 and made["secret"].startswith("whsec_")
        assert (made["kind"], made["events"], made["digest"], made["unopened_after"]) == ("json", ["open"], "15m", "3d")
        path = f"/api/v1/webhooks/{made['id']}"
        status, listed, _ = await api(s, app, "/api/v1/webhooks", alice)
        assert [w["id"] for w in listed["webhooks"]] == [made["id"]] and "secret" not in listed["webhooks"][0]
        for method in ("GET", "PATCH", "DELETE"):
            status, _, _ = await api(s, app, path, mallory, method=method, body={"enabled": False})
            assert status == 404
        assert (await api(s, app, "/api/v1/webhooks", mallory))[1] == {"webhooks": []}
        status, patched, _ = await api(s, app, path, alice, method="PATCH", body={"enabled": False, "digest": ""})
        assert status == 200 and (patched["enabled"], patched["digest"]) == (False, "")
        status, bad, _ = await api(s, app, path, alice, method="PATCH", body={"events": ["opens"]})
        assert status == 400 and bad["error"].startswith("events:")
        async with s.delete(f"http://127.0.0.1:{app.port('admin')}{path}",
                            headers={"Authorization": f"Bearer {alice}"}) as resp:
            assert resp.status == 204
        assert (await api(s, app, path, alice))[0] == 404


async def test_a_loopback_target_is_refused_at_creation_by_default(sink, start_app, tmp_path, receiver):
    app = await start_relay(start_app, tmp_path, sink)
    token = await token_for(app)
    async with aiohttp.ClientSession() as s:
        status, body, _ = await api(s, app, "/api/v1/webhooks", token, method="POST", body={"url": receiver.url})
        assert status == 400 and "loopback" in body["error"]
        status, body, _ = await api(s, app, "/api/v1/webhooks", token, method="POST",
                                    body={"url": "ftp://example.com/x"})
        assert status == 400 and body["error"].startswith("url:")
        assert (await api(s, app, "/api/v1/webhooks", token))[1] == {"webhooks": []}


async def test_test_sends_a_signed_sample_and_deliveries_show_the_attempts(sink, start_app, tmp_path, receiver):
    app = await start_relay(start_app, tmp_path, sink, **FAST)
    token = await token_for(app)
    async with aiohttp.ClientSession() as s:
        _, made, _ = await api(s, app, "/api/v1/webhooks", token, method="POST", body={"url": receiver.url})
        status, attempt, _ = await api(s, app, f"/api/v1/webhooks/{made['id']}/test", token, method="POST")
        assert status == 200 and attempt["delivered"] and attempt["status_code"] == 200
        [(headers, body)] = receiver.got
        assert verify(made["secret"], headers["X-Trackrelay-Signature"], body, int(time.time()))
        [copy] = (await deliver_tracked(app, sink)).values()
        await hit(s, app, copy.pixel, ip=READER_IP, ua=CHROME)
        await receiver.wait_for(2)
        path = f"/api/v1/webhooks/{made['id']}/deliveries"

        async def sent() -> list:
            found = (await api(s, app, path, token))[1]["deliveries"]
            return [d for d in found if d["status"] == "sent"]

        await wait_until(sent)
        [delivery] = await sent()
        assert delivery["event"]["type"] == "message.opened" and delivery["tries"][0]["status_code"] == 200
