"""Helpers for the panel tests: a relay on the capture upstream, mail sent through it for
real, and a browser-like aiohttp client that logs in through the form."""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any, Callable

import aiohttp

from conftest import PASSWORD, add_user, make_config
from hits_helpers import copies_in, send, tracked_mail, wait_until

ALICE = "alice@example.com"
BOB = "bob@example.org"


async def start_panel(start_app: Callable, tmp_path: Path, *, clock: Callable[[], float] | None = None,
                      **overrides: str) -> Any:
    """The relay on the capture upstream (the panel shows delivered copies), trusting
    X-Forwarded-For from loopback on the hits listener so tests pick the reader's IP."""
    overrides.setdefault("http_trusted_proxies", "127.0.0.1/32")
    tmp_path.mkdir(parents=True, exist_ok=True)
    app = await start_app(make_config(tmp_path, "capture:", **overrides), **({"clock": clock} if clock else {}))
    await add_user(app, ALICE)
    return app


def url(app: Any, path: str) -> str:
    return f"http://127.0.0.1:{app.port('admin')}{path}"


def client() -> aiohttp.ClientSession:
    # unsafe=True: aiohttp's jar ignores cookies from IP-address hosts otherwise
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def csrf_in(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]*)"', page)
    assert found, page
    return html.unescape(found.group(1))


async def login(s: aiohttp.ClientSession, app: Any, email: str = ALICE, password: str = PASSWORD,
                next_url: str | None = None) -> aiohttp.ClientResponse:
    """Fill in the login form as a browser would; returns the POST's (unfollowed) response."""
    path = "/login" + (f"?next={next_url}" if next_url else "")
    async with s.get(url(app, path)) as form:
        assert form.status == 200
        page = await form.text()
    nxt = re.search(r'name="next" value="([^"]*)"', page)
    data = {"csrf": csrf_in(page), "email": email, "password": password,
            "next": html.unescape(nxt.group(1)) if nxt else "/"}
    async with s.post(url(app, "/login"), data=data, allow_redirects=False) as resp:
        await resp.read()
        return resp


async def get(s: aiohttp.ClientSession, app: Any, path: str) -> tuple[aiohttp.ClientResponse, str]:
    async with s.get(url(app, path), allow_redirects=False) as resp:
        return resp, await resp.text()


async def send_mail(app: Any, sender: str = ALICE, rcpts: tuple[str, ...] = (BOB,), **kwargs: Any) -> int:
    """Send through the relay for real, wait for the capture upstream to hold every copy;
    returns the message's id (the API's and the panel's)."""
    before = len(await app.store.captured())
    await send(app.port("smtp"), tracked_mail(sender, rcpts, **kwargs), sender, rcpts)
    await wait_until(lambda: _captured_at_least(app, before + 1))
    user = await app.store.user_by_email(sender)
    [latest] = await app.store.message_reports(user.id, limit=1)
    await wait_until(lambda: _finished(app))
    return latest.id


async def _captured_at_least(app: Any, count: int) -> bool:
    return len(await app.store.captured()) >= count


async def _finished(app: Any) -> bool:
    counts = await app.store.queue_counts()
    return not counts.get("queued") and not counts.get("deferred")


async def tracked_urls(app: Any, message_id: int) -> Any:
    """The pixel and click URLs of the message's first delivered copy."""
    [first, *_] = await app.store.captured(message_id)
    return copies_in(first.data)


def cookie_attrs(resp: aiohttp.ClientResponse, name: str) -> dict[str, str]:
    """The attributes of one Set-Cookie header, lower-cased names ({"": value, "httponly": "", ...})."""
    for header in resp.headers.getall("Set-Cookie", []):
        first, *rest = [part.strip() for part in header.split(";")]
        key, _, value = first.partition("=")
        if key == name:
            attrs = {"": value}
            for part in rest:
                k, _, v = part.partition("=")
                attrs[k.lower()] = v
            return attrs
    raise AssertionError(f"no Set-Cookie for {name}: {resp.headers.getall('Set-Cookie', [])}")


async def browser_login(page: Any, app: Any, email: str = ALICE) -> None:
    """Log in through the form in a Playwright page, as a person would; waits for the list."""
    await page.goto(url(app, "/login"))
    await page.fill('input[name="email"]', email)
    await page.fill('input[name="password"]', PASSWORD)
    await page.click('button[type="submit"]')
    await page.wait_for_url(url(app, "/"))
