"""The sent-mail list as a desk: icons faint until a person reads or clicks, hover texts with
people and machines apart, search, keyset paging."""
from __future__ import annotations

import html
import re

import aiohttp

from admin.panel import PAGE_SIZE
from browser import chromium_page
from hits_helpers import READER_IP, THUNDERBIRD, hit, wait_until
from panel_helpers import BOB, browser_login, client, get, login, send_mail, start_panel, tracked_urls, url
from relay.records import NewMessage, NewRecipient

ICON = re.compile(r'<span class="icon( on)?" title="([^"]*)"')


def row_of(page: str, subject: str) -> str:
    """The list's table row holding this subject."""
    start = page.index(subject)
    return page[page.rindex("<tr>", 0, start):page.index("</tr>", start)]


async def test_icons_turn_solid_only_for_people_and_say_who_on_hover(start_app, tmp_path):
    # clicks right after delivery are a link scanner's unless the machine window is this short
    app = await start_panel(start_app, tmp_path, tracking_machine_window="1ms")
    mid = await send_mail(app, subject="Proposal [track]", track="")
    copy = await tracked_urls(app, mid)
    async with client() as s, aiohttp.ClientSession() as hits:
        await login(s, app)
        await hit(hits, app, copy.pixel, method="HEAD", ip=READER_IP)  # a scanner's HEAD: a machine
        await wait_until(lambda: _opens(app, mid, 1))
        _, page = await get(s, app, "/")
        (opened, open_title), (clicked, click_title) = ICON.findall(row_of(page, "Proposal"))
        assert (opened, clicked) == ("", "")  # faint: no person yet
        assert html.unescape(open_title).startswith("0 opens by people · 1 by machines · first ")
        await hit(hits, app, copy.pixel, ua=THUNDERBIRD, ip=READER_IP)
        await hit(hits, app, copy.clicks[0], ua=THUNDERBIRD, ip=READER_IP)
        await wait_until(lambda: _opens(app, mid, 2, clicks=1))
        _, page = await get(s, app, "/")
        (opened, open_title), (clicked, click_title) = ICON.findall(row_of(page, "Proposal"))
        assert opened == " on" and html.unescape(open_title).startswith("1 open by people · 1 by machines")
        assert clicked == " on" and html.unescape(click_title) == "1 click by people · 0 by machines"


async def _opens(app, message_id: int, count: int, clicks: int = 0) -> bool:
    report = await app.store.message_report(message_id, None)
    return report.counts.opens >= count and report.counts.clicks >= clicks


async def test_search_and_keyset_pages_through_every_mail_once(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    alice = await app.store.user_by_email("alice@example.com")
    total = PAGE_SIZE + 30
    for n in range(total):  # straight into the store: sending 130 mails would only be slower
        await app.store.spool(NewMessage(
            queue_id=f"L{n}", user_id=alice.id, mail_from=alice.email, message_id=f"<L{n}@x>",
            subject=f"Report {n:03d}", body=b"x", received_at=1_800_000_000.0 + n // 3, client_ip="192.0.2.1",
            recipients=(NewRecipient("carol@example.org" if n == 7 else BOB, None),)))
    async with client() as s:
        await login(s, app)
        seen, path = [], "/"
        while path:
            _, page = await get(s, app, path)
            seen += re.findall(r"Report (\d{3})", page)
            older = re.search(r'<a href="([^"]*)">Older', page)
            path = html.unescape(older.group(1)) if older else None
        assert sorted(seen) == [f"{n:03d}" for n in range(total)] and len(seen) == total
        _, page = await get(s, app, "/?q=CAROL")
        assert re.findall(r"Report (\d{3})", page) == ["007"]
        _, page = await get(s, app, "/?q=no+such+thing")
        assert "No mail matches" in page


async def test_the_message_page_draws_a_timeline_filters_events_and_shows_an_inert_copy(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    mid = await send_mail(app, subject="Proposal [track]", track="", rcpts=(BOB, "carol@example.org"))
    copy = await tracked_urls(app, mid)
    async with aiohttp.ClientSession() as hits:
        await hit(hits, app, copy.pixel, method="HEAD", ip=READER_IP)
        await hit(hits, app, copy.pixel, ua=THUNDERBIRD, ip=READER_IP)
    await wait_until(lambda: _opens(app, mid, 2))
    before = len((await app.store.message_report(mid, None)).events)
    async with client() as s:
        await login(s, app)
        _, page = await get(s, app, f"/messages/{mid}")
        assert page.count('<circle class="mark cls-') == 2 and "cls-scanner" in page and "cls-human" in page
        _, page = await get(s, app, f"/messages/{mid}?class=scanner")
        assert page.count('<span class="badge badge-scanner">scanner</span>') == 2  # the row and the legend
        assert '<span class="badge badge-human">human</span>' in page  # the legend only
        assert page.count("<td class=\"ua\">") == 1
        frame, _ = re.findall(r'<iframe class="copy" sandbox src="([^"]+)"', page)  # bob's and carol's copies
        resp, inert = await get(s, app, frame)
        assert "sandbox" in resp.headers["Content-Security-Policy"] and "img-src data:" in resp.headers["Content-Security-Policy"]
        assert "/o/" in inert and not re.search(r"\s(href|src)\s*=", inert)
    async with chromium_page() as (page, _):
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        await browser_login(page, app)
        await page.goto(url(app, f"/messages/{mid}"))
        inner = page.frame_locator("iframe.copy").first
        await inner.locator("a").first.wait_for()
        await inner.locator("a").first.click()  # goes nowhere
        await page.wait_for_timeout(300)
    assert not [r for r in requests if "/o/" in r or "/c/" in r or "example.org" in r], requests
    assert len((await app.store.message_report(mid, None)).events) == before  # viewing recorded nothing
