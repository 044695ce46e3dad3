"""The admin listener as an attacker sees it: what its answers give away, its cookies
behind TLS, its login throttle. Real relay on port 0, real aiohttp clients."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from admin.sessions import LOGIN_ATTEMPTS, LoginThrottle, forwarded_https, new_secret, session_hash
from conftest import PASSWORD, add_user
from hits_helpers import db_rows
from panel_helpers import ALICE, BOB, client, cookie_attrs, csrf_in, get, login, send_mail, start_panel, url
from relay.netaddr import parse_networks


async def raw_answer(port: int, request: bytes) -> bytes:
    """Send bytes as they are (a malformed request, say) and read the answer's header block."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()


def browser(app, source: str = "127.0.0.1", *, https: bool = False, **kwargs) -> aiohttp.ClientSession:
    """A browser-like client connecting from `source` (any 127/8 address is this host);
    https: its cookie jar treats the panel as a secure origin (it sits behind TLS)."""
    secure_origin = url(app, "/") if https else None
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=secure_origin)
    return aiohttp.ClientSession(cookie_jar=jar, connector=aiohttp.TCPConnector(local_addr=(source, 0)), **kwargs)


def header_names(block: bytes) -> set[str]:
    lines = block.decode("latin-1").split("\r\n")[1:]
    return {line.split(":", 1)[0].strip().lower() for line in lines if ":" in line}


# no Server header

async def test_no_answer_of_the_admin_or_hits_listener_names_its_software(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    async with client() as s:
        for path in ("/healthz", "/metrics", "/login", "/", "/no/such/page", "/static/panel.css",
                     "/api/v1/messages", "/api/v1/no/such"):
            async with s.get(url(app, path), allow_redirects=False) as resp:
                assert "Server" not in resp.headers, (path, resp.status, resp.headers["Server"])
        async with s.post(url(app, "/login"), data={}, allow_redirects=False) as resp:  # 403, no token
            assert resp.status == 403 and "Server" not in resp.headers
        hits = f"http://127.0.0.1:{app.port('hits')}"
        for path in ("/healthz", "/o/" + "A" * 24 + ".gif", "/c/nothing/1", "/nowhere"):
            async with s.get(hits + path, allow_redirects=False) as resp:
                assert "Server" not in resp.headers, (path, resp.status)
    # a request aiohttp's parser refuses is answered before any route or middleware
    block = await raw_answer(app.port("admin"), b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n")
    assert block.split(b" ")[1] == b"400" and "server" not in header_names(block), block


# Secure cookies behind TLS

def test_only_a_trusted_proxy_says_https():
    proxies = parse_networks(["10.0.0.0/8"])
    assert forwarded_https("10.1.2.3", "https", proxies) and forwarded_https("10.1.2.3", "HTTPS, http", proxies)
    assert not forwarded_https("10.1.2.3", "http", proxies) and not forwarded_https("10.1.2.3", None, proxies)
    assert not forwarded_https("192.0.2.1", "https", proxies) and not forwarded_https("", "https", proxies)
    assert not forwarded_https("10.1.2.3", "https", ())

async def test_cookies_are_secure_when_the_panel_is_public_over_https(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path, admin_public_url="https://panel.example.com")
    async with browser(app, https=True) as s:
        resp, _ = await get(s, app, "/login")
        assert "secure" in cookie_attrs(resp, "trackrelay_login")
        resp = await login(s, app)
        assert resp.status == 303 and "secure" in cookie_attrs(resp, "trackrelay_session")
        assert (await get(s, app, "/"))[0].status == 200


@pytest.mark.parametrize("source, secure", [("127.0.0.1", True), ("127.0.0.2", False)])
async def test_x_forwarded_proto_is_believed_from_trusted_proxies_only(start_app, tmp_path, source, secure):
    app = await start_panel(start_app, tmp_path, http_trusted_proxies="127.0.0.1/32")
    async with browser(app, source, https=secure, headers={"X-Forwarded-Proto": "https"}) as s:
        resp, _ = await get(s, app, "/login")
        assert ("secure" in cookie_attrs(resp, "trackrelay_login")) is secure
        resp = await login(s, app)
        assert resp.status == 303 and ("secure" in cookie_attrs(resp, "trackrelay_session")) is secure
        assert (await get(s, app, "/"))[0].status == 200


# login throttling: per account and client address, looser per account

def test_the_throttle_counts_all_or_nothing():
    now = [0.0]
    throttle = LoginThrottle(1, clock=lambda: now[0])  # 1 per account and address, 10 per account
    assert throttle.attempt("Alice@example.com", "a")
    assert not any(throttle.attempt("ALICE@example.com", "a") for _ in range(50))  # case does not matter
    # the 50 refusals counted nothing against the account: 9 more addresses still get their try
    assert all(throttle.attempt("alice@example.com", f"b{n}") for n in range(9))
    assert not throttle.attempt("alice@example.com", "c") and throttle.attempt("bob@example.org", "c")
    now[0] = 60
    assert throttle.attempt("alice@example.com", "a")
    unlimited = LoginThrottle(0)
    assert all(unlimited.attempt("alice@example.com", "a") for _ in range(1000))


async def login_form(s: aiohttp.ClientSession, app) -> str:
    """Open the login form (its cookie goes into the jar); returns the form's token."""
    _, page = await get(s, app, "/login")
    return csrf_in(page)


async def try_login(s: aiohttp.ClientSession, app, token: str, password: str, email: str = ALICE) -> int:
    """One POST of the login form; 303 logged in, 200 refused, 429 throttled."""
    data = {"csrf": token, "email": email, "password": password, "next": "/"}
    async with s.post(url(app, "/login"), data=data, allow_redirects=False) as resp:
        page = await resp.text()
        assert resp.status != 200 or "Wrong email or password." in page
        return resp.status


async def test_a_guesser_locks_out_only_their_own_address(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    async with browser(app, "127.0.0.2") as attacker:
        token = await login_form(attacker, app)
        assert [await try_login(attacker, app, token, "guess") for _ in range(LOGIN_ATTEMPTS)] == [200] * 10
        assert await try_login(attacker, app, token, PASSWORD) == 429  # even the right password waits
        # refused attempts cost the account's own allowance nothing: hammering on changes nothing
        for _ in range(10 * LOGIN_ATTEMPTS):
            assert await try_login(attacker, app, token, "guess") == 429
    async with browser(app, "127.0.0.3") as owner:
        assert await try_login(owner, app, await login_form(owner, app), PASSWORD) == 303
        assert (await get(owner, app, "/"))[0].status == 200


async def test_a_distributed_guess_is_stopped_per_account(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path, admin_login_attempts_per_minute="2")
    answers = []
    for n in range(11):  # 11 addresses, each within its own limit: 22 guesses, the account allows 20
        async with browser(app, f"127.0.1.{n + 1}") as s:
            token = await login_form(s, app)
            answers += [await try_login(s, app, token, "guess") for _ in range(2)]
    assert answers == [200] * 20 + [429] * 2
    async with browser(app, "127.0.2.1") as owner:
        assert await try_login(owner, app, await login_form(owner, app), PASSWORD) == 429
    async with browser(app, "127.0.2.1") as other:  # another account is not touched
        await add_user(app, BOB)
        assert await try_login(other, app, await login_form(other, app), PASSWORD, BOB) == 303


async def test_parallel_guesses_beyond_the_limit_get_no_password_check(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    async with browser(app, "127.0.0.2") as s:
        token = await login_form(s, app)
        answers = await asyncio.gather(*(try_login(s, app, token, "guess") for _ in range(3 * LOGIN_ATTEMPTS)))
        # counted as they arrive, before the (threaded, slow) argon2 check: only 10 were checked
        assert sorted(answers) == [200] * LOGIN_ATTEMPTS + [429] * (2 * LOGIN_ATTEMPTS)
        assert await try_login(s, app, token, PASSWORD) == 429


async def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path, http_trusted_proxies="127.0.0.1/32")
    async with browser(app, headers={"X-Forwarded-For": "198.51.100.7"}) as attacker:
        token = await login_form(attacker, app)
        assert [await try_login(attacker, app, token, "guess") for _ in range(LOGIN_ATTEMPTS)] == [200] * 10
        assert await try_login(attacker, app, token, PASSWORD) == 429
    async with browser(app, headers={"X-Forwarded-For": "198.51.100.8"}) as owner:
        assert await try_login(owner, app, await login_form(owner, app), PASSWORD) == 303
    user = await app.store.user_by_email(ALICE)
    assert "198.51.100.8" in await app.store.recent_sender_ips(user.id, 0)  # the owner's own hits are "self"


# the attacks the review found held: session fixation, CSRF, open redirects, caching

async def test_a_planted_session_cookie_never_becomes_a_login(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    await add_user(app, BOB)
    async with client() as attacker:
        planted = cookie_attrs(await login(attacker, app, BOB), "trackrelay_session")[""]
    for cookie in (planted, new_secret()):  # the attacker's own live session, or an id never issued
        async with browser(app) as victim:
            token = await login_form(victim, app)
            victim.cookie_jar.update_cookies({"trackrelay_session": cookie}, response_url=URL(url(app, "/")))
            data = {"csrf": token, "email": ALICE, "password": PASSWORD, "next": "/"}
            async with victim.post(url(app, "/login"), data=data, allow_redirects=False) as resp:
                issued = cookie_attrs(resp, "trackrelay_session")[""]
            assert resp.status == 303 and issued != cookie
            resp, page = await get(victim, app, "/")
            assert resp.status == 200 and ALICE in page
        async with aiohttp.ClientSession(cookies={"trackrelay_session": cookie}) as replay:
            async with replay.get(url(app, "/"), allow_redirects=False) as resp:
                assert resp.status == 302  # the planted id logs nobody in, not even the victim
    hashes = {row[0] for row in db_rows(tmp_path, "SELECT id_hash FROM panel_sessions")}
    assert session_hash(planted) not in hashes and len(hashes) == 2


async def test_a_form_token_works_only_for_the_session_it_was_made_for(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    async with client() as one, client() as other:
        await login(one, app)
        await login(other, app)
        _, page = await get(other, app, "/")
        async with one.post(url(app, "/logout"), data={"csrf": csrf_in(page)}, allow_redirects=False) as resp:
            assert resp.status == 403
        assert (await get(one, app, "/"))[0].status == 200


HOSTILE_NEXT = ["//evil.example/", "/\\evil.example", "https://evil.example/", "/\r\nSet-Cookie: a=b",
                "javascript:alert(1)", "/\t/evil.example", "\\\\evil.example"]


async def test_after_login_next_never_leaves_the_site(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    async with client() as s:
        for target in HOSTILE_NEXT[:3]:
            s.cookie_jar.clear()
            data = {"csrf": await login_form(s, app), "email": ALICE, "password": PASSWORD, "next": target}
            async with s.post(url(app, "/login"), data=data, allow_redirects=False) as resp:
                assert resp.status == 303 and resp.headers["Location"] == "/", target
        for target in HOSTILE_NEXT:  # logged in already: /login?next= redirects at once
            async with s.get(url(app, "/login"), params={"next": target}, allow_redirects=False) as resp:
                assert resp.status == 303 and resp.headers["Location"] == "/", target
                assert "Set-Cookie" not in resp.headers


async def test_private_pages_are_never_cached(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    message_id = await send_mail(app)
    [copy, *_] = await app.store.captured(message_id)
    async with client() as s:
        resp, _ = await get(s, app, "/login")  # it sets the form's token cookie
        assert "no-store" in resp.headers["Cache-Control"]
        resp = await login(s, app)
        assert resp.status == 303 and "no-store" in resp.headers["Cache-Control"]
        for path in ("/", "/?tracked=1", f"/messages/{message_id}", f"/messages/{message_id}/captured/{copy.id}.txt",
                     "/messages/999999"):
            resp, _ = await get(s, app, path)
            assert resp.status in (200, 404) and "no-store" in resp.headers["Cache-Control"], path


async def test_a_new_password_ends_the_users_panel_sessions(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    async with client() as s:
        await login(s, app)
        assert (await get(s, app, "/"))[0].status == 200
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
        env["TRACKRELAY_STORE_URL"] = f"sqlite:///{tmp_path}/relay.db"
        changed = await asyncio.to_thread(
            subprocess.run, [str(Path(sys.executable).parent / "trackrelay"), "user", "passwd", ALICE,
                             "--password-stdin"], env=env,
            input="a new long password\n", capture_output=True, text=True, timeout=60)
        assert changed.returncode == 0, changed.stderr
        resp, _ = await get(s, app, "/")  # whoever held the old password holds no session now
        assert resp.status == 302 and resp.headers["Location"].startswith("/login")
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM panel_sessions") == [(0,)]
