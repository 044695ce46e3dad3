"""The bell in headless Chromium: a person opens the mail, the count changes without a reload."""
from __future__ import annotations

import aiohttp

from browser import chromium_page
from hits_helpers import READER_IP, THUNDERBIRD, hit
from panel_helpers import browser_login, send_mail, start_panel, tracked_urls, url
from test_panel import HOSTILE_SUBJECT


async def test_the_bell_counts_a_human_open_live_and_the_page_marks_all_read(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    message_id = await send_mail(app, subject=HOSTILE_SUBJECT)
    copy = await tracked_urls(app, message_id)
    async with chromium_page(viewport={"width": 390, "height": 800}) as (page, dialogs):
        await browser_login(page, app)
        count = page.locator("#bell-count")
        assert await count.inner_text() == "0"
        async with aiohttp.ClientSession() as hits:  # a person opens the mail
            await hit(hits, app, copy.pixel, ip=READER_IP, ua=THUNDERBIRD)
        # the same page, no reload: the stream brought the new count
        await page.wait_for_selector("#bell-count:text-is('1')", timeout=15000)
        assert "unread" in (await page.locator(".bell").get_attribute("class"))
        assert await page.locator(".bell").get_attribute("aria-label") == "1 unread notification"
        await page.screenshot(path=str(tmp_path / "bell.png"))
        await page.click(".bell")
        await page.wait_for_url(url(app, "/notifications"))
        [entry] = await page.locator("ul.notifications li").all()
        assert HOSTILE_SUBJECT in await entry.inner_text() and "bob@" in await entry.inner_text()
        await page.click("text=Mark all read")
        await page.wait_for_url(url(app, "/notifications"))
        assert await page.locator("#bell-count").inner_text() == "0"
        assert await page.locator("ul.notifications li.unread").count() == 0
    assert dialogs == []  # the hostile subject stayed text
