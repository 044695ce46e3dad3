"""The HTML panel for real: the relay started on port 0, mail sent over SMTP, the panel
driven by an aiohttp client with a cookie jar and by headless Chromium (Playwright)."""
from __future__ import annotations

import hashlib
import time

import aiohttp
import pytest
from aiohttp import web

from admin.sessions import (
    LOGIN_ATTEMPTS,
    RateLimiter,
    csrf_ok,
    csrf_token,
    new_secret,
    plausible,
    safe_next,
    session_state,
    set_session_cookie,
)
from browser import chromium_page
from conftest import PASSWORD, add_user
from hits_helpers import READER_IP, db_rows, hit, wait_until
from panel_helpers import (
    ALICE,
    BOB,
    client,
    cookie_attrs,
    csrf_in,
    get,
    login,
    send_mail,
    start_panel,
    tracked_urls,
    url,
)

HOSTILE_SUBJECT = "<script>alert(1)</script>"
HOSTILE_UA = "<img src=x onerror=alert(1)>"
HOSTILE_URL = "https://example.com/q?x=<b>bold</b>&y=\"quoted\""


# pure helpers

def test_session_expiry_is_idle_or_absolute():
    assert session_state(0, 0, 30) == "fresh"
    assert session_state(0, 0, 61) == "touch"
    assert session_state(0, 0, 12 * 3600 + 1) == "expired"  # idle
    assert session_state(0, 7 * 86400 - 10, 7 * 86400 + 1) == "expired"  # active, but too old
    assert session_state(0, 6 * 86400, 6 * 86400 + 5) == "fresh"


def test_next_targets_stay_on_this_site():
    assert safe_next("/messages/7?x=1") == "/messages/7?x=1"
    for bad in (None, "", "https://evil.example/", "//evil.example/", "/\\evil.example", "evil",
                "/x\r\nSet-Cookie: a=b", "/login?next=/", "/caf\u00e9", "/\u2603", "/a b", "/a\x00b"):
        assert safe_next(bad) == "/", bad


def test_csrf_and_session_tokens():
    sid = new_secret()
    assert len(sid) >= 43 and plausible(sid)  # 256 bits, URL-safe base64
    assert not plausible("x") and not plausible("a" * 200) and not plausible("<script>" * 5)
    assert csrf_ok(csrf_token(sid), csrf_token(sid))
    assert not csrf_ok(csrf_token(sid), csrf_token(new_secret()))
    assert not csrf_ok("", "") and not csrf_ok(csrf_token(sid), None)


def test_session_cookie_is_secure_over_https():
    for secure in (True, False):
        response = web.Response()
        set_session_cookie(response, new_secret(), secure=secure)
        header = response.cookies["trackrelay_session"].output()
        assert "HttpOnly" in header and "SameSite=Lax" in header and ("Secure" in header) is secure


def test_rate_limiter_window_and_keys():
    now = [0.0]
    limiter = RateLimiter(3, 60, clock=lambda: now[0])
    assert all(limiter.allow("ip:a", "email:x") for _ in range(3))
    assert not limiter.allow("ip:a", "email:y")  # the IP is spent, whatever the address
    assert not limiter.allow("ip:b", "email:x")  # the address is spent, whatever the IP
    now[0] = 61
    assert limiter.allow("ip:a", "email:x")
    small = RateLimiter(1, 60, max_keys=2)  # memory stays bounded: the oldest keys are forgotten
    assert small.allow("a") and small.allow("b") and small.allow("c") and small.allow("a")
    assert len(small._hits) == 2
    assert not small.blocked("never-seen") and len(small._hits) == 2  # a look-up remembers nothing


# login, sessions, CSRF

async def test_login_form_sets_a_hashed_session_cookie(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    async with client() as s:
        resp, page = await get(s, app, "/login")
        for field in ('name="email"', 'name="password"', 'name="csrf"'):
            assert field in page
        login_cookie = cookie_attrs(resp, "trackrelay_login")
        assert "httponly" in login_cookie and login_cookie["samesite"] == "Strict"
        resp = await login(s, app)
        assert resp.status == 303 and resp.headers["Location"] == "/"
        cookie = cookie_attrs(resp, "trackrelay_session")
        assert "httponly" in cookie and cookie["samesite"] == "Lax" and cookie["path"] == "/"
        assert "secure" not in cookie  # plain http here; over https the flag is set
        sid = cookie[""]
        assert len(sid) >= 43
        resp, page = await get(s, app, "/")
        assert resp.status == 200 and ALICE in page and "Log out" in page
    # the store knows the session only by its hash
    rows = db_rows(tmp_path, "SELECT id_hash FROM panel_sessions")
    assert rows == [(hashlib.sha256(sid.encode()).hexdigest(),)]
    assert sid.encode() not in (tmp_path / "relay.db").read_bytes()


async def test_login_without_or_with_a_wrong_csrf_token_is_refused(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    async with client() as s:
        await get(s, app, "/login")  # the login cookie is set
        for data in ({"email": ALICE, "password": PASSWORD},
                     {"email": ALICE, "password": PASSWORD, "csrf": "wrong" * 10},
                     {"email": ALICE, "password": PASSWORD, "csrf": ""}):
            async with s.post(url(app, "/login"), data=data, allow_redirects=False) as resp:
                assert resp.status == 403, data
                assert "trackrelay_session" not in resp.cookies
                assert "expired" in await resp.text()
    # a cross-site form: the token is in the page it copied, but the browser sends no cookie
    async with client() as s:
        _, page = await get(s, app, "/login")
    async with client() as attacker:
        data = {"email": ALICE, "password": PASSWORD, "csrf": csrf_in(page)}
        async with attacker.post(url(app, "/login"), data=data, allow_redirects=False) as resp:
            assert resp.status == 403
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM panel_sessions") == [(0,)]


async def test_wrong_password_and_unknown_user_get_the_same_generic_error(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    async with client() as s:
        pages = []
        for email, password in ((ALICE, "wrong password"), ("nobody@example.com", PASSWORD)):
            resp = await login(s, app, email, password)
            assert resp.status == 200 and "trackrelay_session" not in resp.cookies
            async with s.post(url(app, "/login"), allow_redirects=False, data={
                    "csrf": csrf_in((await get(s, app, "/login"))[1]), "email": email, "password": password}) as again:
                pages.append((await again.text()).replace(email, "EMAIL"))
        assert "Wrong email or password." in pages[0]
        assert pages[0] == pages[1]  # nothing tells a known address from an unknown one
        resp, _ = await get(s, app, "/")
        assert resp.status == 302


async def test_login_attempts_are_rate_limited(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    async with client() as s:
        for _ in range(LOGIN_ATTEMPTS):
            assert (await login(s, app, password="guess")).status == 200
        resp = await login(s, app)  # even the right password waits now
        assert resp.status == 429 and "trackrelay_session" not in resp.cookies


async def test_pages_need_a_session_and_login_returns_to_the_page(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    message_id = await send_mail(app)
    async with client() as s:
        for path in ("/", "/?tracked=1", f"/messages/{message_id}"):
            resp, _ = await get(s, app, path)
            assert resp.status == 302 and resp.headers["Location"].startswith("/login?next=/"), path
        resp = await login(s, app, next_url=f"/messages/{message_id}")
        assert resp.headers["Location"] == f"/messages/{message_id}"
        resp, page = await get(s, app, f"/messages/{message_id}")
        assert resp.status == 200 and "Quarterly numbers" in page
        resp, _ = await get(s, app, "/login")  # already logged in
        assert resp.status == 303 and resp.headers["Location"] == "/"
    async with client() as s:
        resp = await login(s, app, next_url="//evil.example/")
        assert resp.headers["Location"] == "/"


async def test_logout_needs_csrf_and_ends_the_session(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    async with client() as s:
        sid = cookie_attrs(await login(s, app), "trackrelay_session")[""]
        _, page = await get(s, app, "/")
        async with s.post(url(app, "/logout"), data={"csrf": "nope"}, allow_redirects=False) as resp:
            assert resp.status == 403
        assert (await get(s, app, "/"))[0].status == 200  # still logged in
        async with s.post(url(app, "/logout"), data={"csrf": csrf_in(page)}, allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/login"
            cleared = cookie_attrs(resp, "trackrelay_session")
            assert cleared[""] in ("", '""') and cleared["max-age"] == "0"
        assert (await get(s, app, "/"))[0].status == 302
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM panel_sessions") == [(0,)]
    async with aiohttp.ClientSession(cookies={"trackrelay_session": sid}) as replay:
        async with replay.get(url(app, "/"), allow_redirects=False) as resp:
            assert resp.status == 302  # the old cookie is dead server-side


async def test_idle_sessions_expire(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    async with client() as s:
        await login(s, app)
        assert (await get(s, app, "/"))[0].status == 200
        await app.store._runner.write(lambda c: c.execute(
            "UPDATE panel_sessions SET last_seen = ?", (time.time() - 13 * 3600,)))
        resp, _ = await get(s, app, "/")
        assert resp.status == 302 and resp.headers["Location"].startswith("/login")
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM panel_sessions") == [(0,)]


async def test_panel_ip_counts_as_a_sender_ip(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    user = await app.store.user_by_email(ALICE)
    assert await app.store.recent_sender_ips(user.id, 0) == frozenset()
    async with client() as s:
        await login(s, app)
    assert await app.store.recent_sender_ips(user.id, time.time() - 60) == frozenset({"127.0.0.1"})


async def test_security_headers_and_error_pages(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    async with client() as s:
        for path in ("/login", "/no/such/page"):
            resp, page = await get(s, app, path)
            csp = resp.headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp and "unsafe-inline" not in csp
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert resp.headers["Referrer-Policy"] == "no-referrer"
            assert resp.headers["Content-Type"].startswith("text/html")
        assert resp.status == 404 and "<h1>404" in page
        await login(s, app)
        resp, page = await get(s, app, "/messages/999999")
        assert resp.status == 404 and resp.headers["X-Frame-Options"] == "DENY" and ALICE in page
        resp, css = await get(s, app, "/static/panel.css")
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/css") and "body" in css
        async with s.get(url(app, "/api/v1/messages")) as api:  # the API keeps its JSON errors
            assert api.status == 401 and api.headers["Content-Type"].startswith("application/json")


# messages

async def test_message_list_detail_counts_and_tracked_filter(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    untracked = await send_mail(app, subject="Lunch plans", track="")
    tracked = await send_mail(app, subject="Pricing [track]", track="", rcpts=(BOB, "carol@example.net"))
    copy = await tracked_urls(app, tracked)
    async with aiohttp.ClientSession() as hits:
        await hit(hits, app, copy.pixel, ip=READER_IP)
        await hit(hits, app, copy.clicks[1], ip=READER_IP)
    await wait_until(lambda: _events(app, tracked, 2))
    async with client() as s:
        await login(s, app)
        _, page = await get(s, app, "/")
        assert page.index("Pricing") < page.index("Lunch plans")  # newest first
        assert f'href="/messages/{untracked}"' in page and "not tracked" in page
        _, page = await get(s, app, "/?tracked=1")
        assert "Pricing" in page and "Lunch plans" not in page
        resp, page = await get(s, app, f"/messages/{tracked}")
        assert resp.status == 200
        for text in (BOB, "carol@example.net", "https://example.org/second", "203.0.113.0", "badge-human",
                     "Delivered copies", "view raw"):
            assert text in page, text
        report = await app.store.message_report(tracked, None)
        assert report.counts.opens >= 1 and report.counts.clicks == 1
        assert f"{report.counts.opens} opens" in page and f"{report.counts.clicks} clicks" in page
        # the raw copy: text/plain, inline, nosniff - never rendered as HTML
        captured = await app.store.captured(tracked)
        async with s.get(url(app, f"/messages/{tracked}/captured/{captured[0].id}.txt")) as raw:
            body = await raw.read()
            assert raw.status == 200 and raw.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert raw.headers["X-Content-Type-Options"] == "nosniff"
            assert raw.headers["Content-Disposition"].startswith("inline")
            assert "sandbox" in raw.headers["Content-Security-Policy"]
            assert body == captured[0].data
        assert (await get(s, app, f"/messages/{tracked}/captured/999999.txt"))[0].status == 404


async def _events(app, message_id: int, count: int) -> bool:
    report = await app.store.message_report(message_id, None)
    return report is not None and len(report.events) >= count


async def test_users_see_only_their_own_mail(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    await add_user(app, "mallory@example.com")
    message_id = await send_mail(app, subject="Alice's secret plan")
    captured = await app.store.captured(message_id)
    async with client() as s:
        await login(s, app, "mallory@example.com")
        _, page = await get(s, app, "/")
        assert "secret plan" not in page and "No mail yet" in page
        for path in (f"/messages/{message_id}", f"/messages/{message_id}/captured/{captured[0].id}.txt",
                     f"/messages/{message_id}/captured/{captured[0].id}.html"):
            resp, page = await get(s, app, path)
            assert resp.status == 404 and "secret plan" not in page, path


@pytest.mark.parametrize("see_all", [False, True])
async def test_admins_see_everyones_mail_only_with_admins_see_all(start_app, tmp_path, see_all):
    app = await start_panel(start_app, tmp_path, admin_admins_see_all=str(see_all).lower())
    await add_user(app, "root@example.com", admin=True)
    message_id = await send_mail(app, subject="Report from Alice")
    async with client() as s:
        await login(s, app, "root@example.com")
        _, listing = await get(s, app, "/")
        resp, _ = await get(s, app, f"/messages/{message_id}")
    assert resp.status == (200 if see_all else 404)
    assert ("Report from Alice" in listing) is see_all


# the browser

async def test_browser_login_and_hostile_values_stay_text(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    message_id = await send_mail(app, subject=HOSTILE_SUBJECT, links=(HOSTILE_URL, "https://example.org/ok"))
    copy = await tracked_urls(app, message_id)
    async with aiohttp.ClientSession() as hits:
        await hit(hits, app, copy.pixel, ip=READER_IP, ua=HOSTILE_UA)
        await hit(hits, app, copy.clicks[0], ip=READER_IP, ua=HOSTILE_UA)
    await wait_until(lambda: _events(app, message_id, 2))
    report = await app.store.message_report(message_id, None)

    async with chromium_page(viewport={"width": 1280, "height": 900}) as (page, dialogs):
        await page.goto(url(app, "/"))
        assert page.url.startswith(url(app, "/login"))  # sent to the form
        await page.fill('input[name="email"]', ALICE)
        await page.fill('input[name="password"]', "not the password")
        await page.click('button[type="submit"]')
        assert await page.get_by_role("alert").inner_text() == "Wrong email or password."
        await page.screenshot(path=str(tmp_path / "login.png"))
        await page.fill('input[name="email"]', ALICE)
        await page.fill('input[name="password"]', PASSWORD)
        await page.click('button[type="submit"]')
        await page.wait_for_url(url(app, "/"))
        assert await page.get_by_text(HOSTILE_SUBJECT, exact=True).count() == 1
        await page.screenshot(path=str(tmp_path / "list.png"), full_page=True)
        await page.click(f'a[href="/messages/{message_id}"]')
        await page.wait_for_url(url(app, f"/messages/{message_id}"))
        assert await page.locator("h1").inner_text() == HOSTILE_SUBJECT
        # one cell per event (the open, the click, maybe an implied open of the click's class)
        assert await page.get_by_text(HOSTILE_UA, exact=True).count() == len(report.events) >= 2
        assert await page.get_by_text(HOSTILE_URL, exact=True).count() >= 2  # links table, click event
        assert await page.locator("img").count() == 0
        # no script but the bell's own
        assert await page.locator("script").count() == await page.locator('script[src="/static/bell.js"]').count() == 1
        assert await page.locator("b").count() == 0
        await page.click("summary")  # the captured copy's headers
        await page.screenshot(path=str(tmp_path / "message.png"), full_page=True)
        # the delivered copy, shown as text. Read off the answer: Playwright's scripts hang in
        # a sandboxed text page entered from a page with a sandboxed frame (a screenshot shows it fine)
        async with page.expect_response("**/captured/*.txt") as answer:
            await page.click("text=view raw")
        await page.wait_for_url("**/captured/*.txt")
        raw = (await (await answer.value).body()).decode()
        assert (await answer.value).headers["content-type"] == "text/plain; charset=utf-8"
        assert f"Subject: {HOSTILE_SUBJECT}" in raw and "<html>" in raw
        await page.go_back()
        await page.click("text=Log out")
        await page.wait_for_url(url(app, "/login"))
        await page.close()
    assert dialogs == []
