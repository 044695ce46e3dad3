"""Every panel page in headless Chromium with axe-core (npm `axe-core`, injected by the
test): no serious or critical accessibility violation, at desktop width and at 390 px
(a phone), where nothing may overflow the page sideways."""
from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from browser import chromium_page
from conftest import _missing, add_user
from hits_helpers import READER_IP, THUNDERBIRD, hit, wait_until
from panel_helpers import ALICE, BOB, browser_login, send_mail, start_panel, tracked_urls, url

AXE = Path(__file__).parent.parent / ".cache/npm/node_modules/axe-core/axe.min.js"
ROOT = "root@example.com"


def axe_script() -> Path:
    if not AXE.is_file():
        _missing(f"axe-core is not installed at {AXE} (make test installs it)")
    return AXE


async def violations(page) -> list[str]:
    """axe's serious and critical findings on the page, one line each."""
    await page.add_script_tag(path=str(axe_script()))
    found = await page.evaluate("""async () => (await axe.run(document, {resultTypes: ['violations']}))
        .violations.filter(v => ['serious', 'critical'].includes(v.impact))
        .map(v => v.id + ': ' + v.help + ' @ ' + v.nodes.map(n => n.target.join(' ')).slice(0, 3).join(' | '))""")
    return list(found)


@pytest.mark.parametrize("width", [1280, 390])
async def test_no_serious_accessibility_violation_on_any_page(start_app, tmp_path, width):
    axe_script()

    app = await start_panel(start_app, tmp_path, privacy_retention_days="30")
    await add_user(app, ROOT, admin=True)
    mid = await send_mail(app, sender=ALICE, subject="Quarterly numbers [track]", track="", rcpts=(BOB, "c@x.org"))
    copy = await tracked_urls(app, mid)
    async with aiohttp.ClientSession() as hits:
        await hit(hits, app, copy.pixel, ua=THUNDERBIRD, ip=READER_IP)
    await wait_until(lambda: _has_events(app, mid))
    pages = {ALICE: ["/", "/?tracked=1", f"/messages/{mid}", "/notifications", "/settings", "/no-such-page"],
             ROOT: ["/admin/users", "/admin/privacy", f"/admin/privacy?address={BOB}", "/admin/health"]}
    found: dict[str, list[str]] = {}
    # bypass_csp: the panel forbids injected scripts, axe is one
    async with chromium_page(viewport={"width": width, "height": 900}, bypass_csp=True) as (page, _):
        await page.goto(url(app, "/login"))
        found["/login"] = await violations(page) + await overflow(page, width)
        for who, paths in pages.items():
            await browser_login(page, app, who)
            for path in paths:
                await page.goto(url(app, path))
                found[path] = await violations(page) + await overflow(page, width)
            await page.context.clear_cookies()
    assert {path: lines for path, lines in found.items() if lines} == {}


async def overflow(page, width: int) -> list[str]:
    """The page itself must not scroll sideways (wide tables scroll inside their own box)."""
    scroll = await page.evaluate("document.documentElement.scrollWidth")
    return [f"page is {scroll}px wide at {width}px"] if scroll > width + 1 else []


async def _has_events(app, message_id: int) -> bool:
    report = await app.store.message_report(message_id, None)
    return bool(report.events)
