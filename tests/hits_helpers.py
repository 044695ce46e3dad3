"""Helpers for the hits and API tests: tracked mail sent for real, tokens read back out of it."""
from __future__ import annotations

import asyncio
import html
import re
import sqlite3
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from typing import Any, Callable, Sequence

import aiohttp
import aiosmtplib
import asyncpg

from conftest import PASSWORD, Sink, relay_to

THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.3.0"
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0.0.0 Safari/537.36")
READER_IP = "203.0.113.77"  # TEST-NET-3: no list knows it, so a browser from here is a person
TRICKY_URL = "https://Example.COM:443/a%7Eb?x=1&y=%2F#frag"
LINKS = (TRICKY_URL, "https://example.org/second", "https://example.net/third?q=%E2%82%AC")


class FakeClock:
    """Wall time that only moves when a test says so."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Tracked:
    """One delivered copy: its pixel URL and click URLs (in link order)."""

    recipient: str
    pixel: str
    clicks: list[str] = field(default_factory=list)

    @property
    def token(self) -> str:
        return self.pixel.rsplit("/", 1)[1].removesuffix(".gif")


def tracked_mail(sender: str, rcpts: Sequence[str], subject: str = "Quarterly numbers",
                 links: Sequence[str] = LINKS, track: str = "on") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, ", ".join(rcpts), subject
    msg["Message-ID"] = f"<{time.monotonic_ns()}@example.com>"
    if track:
        msg["X-Track"] = track
    msg.set_content("Hi,\n\nsee the numbers.\n")
    anchors = "".join(f'<p><a href="{html.escape(u)}">link {i}</a></p>' for i, u in enumerate(links))
    msg.add_alternative(f"<html><body><p>Hi,</p>{anchors}</body></html>", subtype="html")
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def send(port: int, data: bytes, sender: str, rcpts: Sequence[str]) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await client.connect()
    try:
        await client.login(sender, PASSWORD)
        await client.sendmail(sender, list(rcpts), data)
    finally:
        await client.quit()


def copies_in(data: bytes) -> Tracked:
    """The pixel and click URLs of one delivered message."""
    msg = BytesParser(policy=default).parsebytes(data)
    body = msg.get_body(("html",)).get_content()
    pixel = re.search(r'src="([^"]*/o/[^"]+\.gif)"', body)
    assert pixel, body
    clicks = [html.unescape(u) for u in re.findall(r'href="([^"]*/c/[^"]+)"', body)]
    to = msg["To"]
    return Tracked(str(to), html.unescape(pixel.group(1)), clicks)


async def deliver_tracked(app: Any, sink: Sink, rcpts: Sequence[str] = ("bob@example.org",),
                          sender: str = "alice@example.com", **kwargs: Any) -> dict[str, Tracked]:
    """Send a tracked mail through the relay for real; {recipient: its copy's URLs}."""
    before = len(sink.messages)
    await send(app.port("smtp"), tracked_mail(sender, rcpts, **kwargs), sender, rcpts)
    got = await sink.wait_for(before + len(rcpts))
    out: dict[str, Tracked] = {}
    for received in got[before:]:
        copy = copies_in(received.data)
        for rcpt in received.rcpt_tos:
            out[rcpt] = Tracked(rcpt, copy.pixel, copy.clicks)
    await wait_until(lambda: _all_finished(app))
    return out


async def _all_finished(app: Any) -> bool:
    counts = await app.store.queue_counts()
    return not counts.get("queued") and not counts.get("deferred")


async def start_relay(start_app: Callable, tmp_path: Any, sink: Sink, *, clock: Callable[[], float] | None = None,
                      **overrides: str) -> Any:
    """The relay with a sink upstream, trusting X-Forwarded-For from loopback (tests pick client IPs)."""
    overrides.setdefault("http_trusted_proxies", "127.0.0.1/32")
    return await relay_to(sink, start_app, tmp_path, clock=clock, **overrides)


def local(app: Any, url: str, part: str = "hits") -> str:
    """A URL written into mail, pointed at the test server's real port."""
    path = url.split("/", 3)[3]
    return f"http://127.0.0.1:{app.port(part)}/{path}"


async def hit(session: aiohttp.ClientSession, app: Any, url: str, *, ua: str = THUNDERBIRD,
              ip: str | None = None, method: str = "GET", headers: dict[str, str] | None = None
              ) -> aiohttp.ClientResponse:
    h = {"User-Agent": ua, **(headers or {})}
    if ip:
        h["X-Forwarded-For"] = ip
    async with session.request(method, local(app, url), headers=h, allow_redirects=False) as resp:
        await resp.read()
        return resp


def db_rows(tmp_path: Any, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
    conn = sqlite3.connect(f"{tmp_path}/relay.db")
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def store_sql(app: Any, sql: str) -> list[tuple]:
    """A statement without parameters on the app's store, whichever engine it is; its rows."""
    url = app.cfg.store.url
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None, timeout=10)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    pg = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await pg.fetch(sql)]
    finally:
        await pg.close()


async def settled(app: Any) -> None:
    """Wait until every hit seen so far is stored or counted: none waits for a look-up, none
    is queued or being written. (Hits are seen before they are answered.)"""
    await wait_until(lambda: app.hits.parked == 0 and app.recorder.depth == 0)


async def events(app: Any, tmp_path: Any, count: int, timeout: float = 10.0) -> list[tuple]:
    """Wait until the store holds `count` events, then return them in time order
    (type, class, ip, ua, position, implied). Cold hits may reach the store out of order."""
    sql = "SELECT type, class, ip, user_agent, position, implied FROM events ORDER BY at, id"
    found: list[tuple] = []

    async def enough() -> bool:
        found[:] = await store_sql(app, sql)
        return len(found) >= count

    await wait_until(enough, timeout)
    return [(*row[:5], int(row[5])) for row in found]  # implied: 0/1 on both engines
