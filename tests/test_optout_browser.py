"""The opt-out page in headless Chromium: visiting it changes nothing, its button stops tracking."""
from __future__ import annotations

from browser import chromium_page
from hits_helpers import deliver_tracked, local, start_relay
from test_optout import dnt, optout_url


async def test_visiting_the_page_changes_nothing_and_its_button_opts_out(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink, privacy_optout_link="true")
    await deliver_tracked(app, sink)
    url = local(app, optout_url(sink.messages[-1].data))
    async with chromium_page(viewport={"width": 390, "height": 800}) as (page, dialogs):
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        answer = await page.goto(url)
        assert answer is not None and answer.status == 200
        assert await page.locator("h1").inner_text() == "Stop tracking?"
        await page.reload()  # twice, as a reader might
        assert await dnt(app) == []
        assert requests == [url, url]  # the page loads nothing else
        await page.screenshot(path=str(tmp_path / "optout.png"))
        await page.click("button[type=submit]")
        await page.wait_for_selector("h1:text-is('Tracking stopped')")
        assert page.url == url
        assert "will no longer be tracked" in await page.locator("p").inner_text()
    assert await dnt(app) == [("bob@example.org", "link")]
    assert dialogs == []
