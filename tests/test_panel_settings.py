"""The panel's settings and admin pages through their forms (session, CSRF), on a real relay:
a changed policy governs the next mail, tokens are made once and revoked, webhooks added and
tested, an admin adds and disables users, the health page reads /metrics."""
from __future__ import annotations

import re

import aiohttp
import aiosmtplib
import pytest
from aiohttp import web

from conftest import PASSWORD, add_user
from panel_helpers import ALICE, BOB, client, csrf_in, get, login, send_mail, start_panel, url
from hits_helpers import send, tracked_mail

SECRET = re.compile(r'<code class="secret">([^<]+)</code>')


async def post(s: aiohttp.ClientSession, app, path: str, data: dict) -> tuple[int, str, str]:
    async with s.post(url(app, path), data=data, allow_redirects=False) as resp:
        return resp.status, resp.headers.get("Location", ""), await resp.text()


async def test_the_policy_set_here_governs_the_next_mail(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    async with client() as s:
        await login(s, app)
        _, page = await get(s, app, "/settings")
        token = csrf_in(page)
        assert 'value="opt-in" selected' in page
        assert (await post(s, app, "/settings/policy", {"mode": "always", "opens": "1", "csrf": "x"}))[0] == 403
        status, where, _ = await post(s, app, "/settings/policy", {"mode": "always", "opens": "1", "csrf": token})
        assert status == 303 and where.startswith("/settings?done=")
        _, page = await get(s, app, where)
        assert 'value="always" selected' in page and "Tracking policy saved" in page
    policy = await app.store.policy((await app.store.user_by_email(ALICE)).id)
    assert (policy.mode, policy.opens, policy.clicks, policy.notify, policy.sticky) == ("always", True, False, False, False)
    mid = await send_mail(app, subject="No tag at all", track="")  # no header, no tag: tracked by the policy
    [copy] = await app.store.captured(mid)
    assert b"/o/" in copy.data and b"/c/" not in copy.data  # opens only


async def test_tokens_are_shown_once_listed_and_revoked(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    async with client() as s:
        await login(s, app)
        token = csrf_in((await get(s, app, "/settings"))[1])
        status, _, page = await post(s, app, "/settings/tokens", {"name": "<laptop>", "csrf": token})
        assert status == 200 and "&lt;laptop&gt;" in page
        [value] = SECRET.findall(page)
        api = f"http://127.0.0.1:{app.port('admin')}/api/v1/policy"
        async with s.get(api, headers={"Authorization": f"Bearer {value}"}) as resp:
            assert resp.status == 200
        _, page = await get(s, app, "/settings")
        assert value not in page and "&lt;laptop&gt;" in page  # listed by name, never again by value
        [token_id] = re.findall(r'action="/settings/tokens/(\d+)/delete"', page)
        assert (await post(s, app, f"/settings/tokens/{token_id}/delete", {"csrf": token}))[0] == 303
        async with s.get(api, headers={"Authorization": f"Bearer {value}"}) as resp:
            assert resp.status == 401
        assert (await post(s, app, f"/settings/tokens/{token_id}/delete", {"csrf": token}))[0] == 404


async def test_webhooks_are_added_tested_and_deleted(start_app, tmp_path):
    got: list[bytes] = []

    async def receive(request: web.Request) -> web.Response:
        got.append(await request.read())
        return web.Response(text="ok")

    receiver = web.Application()
    receiver.router.add_post("/hook", receive)
    runner = web.AppRunner(receiver)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        app = await start_panel(start_app, tmp_path, notify_allow_private_targets="true")
        async with client() as s:
            await login(s, app)
            token = csrf_in((await get(s, app, "/settings"))[1])
            hook = {"url": f"http://127.0.0.1:{port}/hook", "kind": "json", "event_open": "1", "humans_only": "1",
                    "first_only": "1", "unopened_after": "3d", "digest": "", "csrf": token}
            status, _, page = await post(s, app, "/settings/webhooks", {**hook, "url": "ftp://nowhere"})
            assert status == 400 and 'role="alert"' in page
            status, _, page = await post(s, app, "/settings/webhooks", hook)
            assert status == 200 and SECRET.findall(page)[0].startswith("whsec_")
            [hook_id] = re.findall(r'action="/settings/webhooks/(\d+)/test"', page)
            status, _, page = await post(s, app, f"/settings/webhooks/{hook_id}/test", {"csrf": token})
            assert status == 200 and "Test delivered (HTTP 200)" in page and len(got) == 1
            assert (await post(s, app, f"/settings/webhooks/{hook_id}/delete", {"csrf": token}))[0] == 303
            assert await app.store.webhooks(None) == []
    finally:
        await runner.cleanup()


async def test_preferences_and_password_change(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    async with client() as s:
        await login(s, app)
        token = csrf_in((await get(s, app, "/settings"))[1])
        status, _, page = await post(s, app, "/settings/preferences", {"language": "hu", "timezone": "Mars/Base",
                                                                        "csrf": token})
        assert status == 400 and "Unknown time zone" in page
        assert (await post(s, app, "/settings/preferences", {"language": "hu", "timezone": "Europe/Budapest",
                                                              "csrf": token}))[0] == 303
        user = await app.store.user_by_email(ALICE)
        assert (user.language, user.timezone) == ("hu", "Europe/Budapest")
        bad = {"current_password": "wrong", "new_password": "a new long one", "repeat_password": "a new long one"}
        assert (await post(s, app, "/settings/password", {**bad, "csrf": token}))[0] == 400
        good = {**bad, "current_password": PASSWORD}
        assert (await post(s, app, "/settings/password", {**good, "csrf": token}))[1] == "/login"
        assert (await get(s, app, "/settings"))[0].status == 302  # every session ended, this one too
        assert (await login(s, app, ALICE, "a new long one")).status == 303


async def test_an_admin_adds_and_disables_a_user_who_then_cannot_log_in_or_send(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    await add_user(app, "root@example.com", admin=True)
    async with client() as admin, client() as alice:
        await login(alice, app)
        assert (await get(alice, app, "/admin/users"))[0].status == 404
        await login(admin, app, "root@example.com")
        _, page = await get(admin, app, "/admin/users")
        token = csrf_in(page)
        status, _, page = await post(admin, app, "/admin/users", {"email": "Dave@Example.com", "csrf": token})
        [password] = SECRET.findall(page)
        assert status == 200 and "dave@example.com added" in page
        async with client() as dave:
            assert (await login(dave, app, "dave@example.com", password)).status == 303
        status, _, _ = await post(admin, app, "/admin/users/change", {"email": ALICE, "action": "disable",
                                                                       "csrf": token})
        assert status == 303
        assert (await get(alice, app, "/"))[0].status == 302  # her session is gone
        assert (await login(alice, app)).status == 200  # the form again: refused
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await send(app.port("smtp"), tracked_mail(ALICE, [BOB]), ALICE, [BOB])
        status, _, page = await post(admin, app, "/admin/users/change", {"email": "root@example.com",
                                                                          "action": "disable", "csrf": token})
        assert status == 400 and "your own account" in page
        await post(admin, app, "/admin/users/change", {"email": ALICE, "action": "enable", "csrf": token})
        assert (await login(alice, app)).status == 303
        _, page = await get(admin, app, "/admin/health")
        for figure in ("trackrelay_messages", "trackrelay_hits_dropped_total", "trackrelay_notification_deliveries"):
            assert f"<code>{figure}</code>" in page, figure
        assert (await get(alice, app, "/admin/health"))[0].status == 404
