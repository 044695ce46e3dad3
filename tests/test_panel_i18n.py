"""The panel's two languages: a complete Hungarian catalog, Hungarian pages without English
leftovers, the language chosen by the user's setting else Accept-Language, times in the
user's zone."""
from __future__ import annotations

import asyncio
import html
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from conftest import add_user
from hits_helpers import READER_IP, FakeClock, hit, wait_until
from panel_helpers import ALICE, BOB, client, get, login, send_mail, start_panel, tracked_urls, url
from relay.records import UserChanges

ADMIN = Path(__file__).parent.parent / "admin"
HU = ADMIN / "locale/hu/LC_MESSAGES/messages.po"
GOOGLE_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"


def hungarian():
    with HU.open("rb") as f:
        return read_po(f)


def source_strings() -> set:
    """Every msgid in the panel's templates and Python, extracted as `make` would."""
    method_map = [("admin/templates/**.html", "jinja2"), ("admin/**.py", "python"), ("relay/privacy.py", "python")]
    options = {"admin/templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    return {found[2] for found in extract_from_dir(str(ADMIN.parent), method_map, options,
                                                   directory_filter=lambda d: ".venv" not in d and ".cache" not in d)}


def test_the_hungarian_catalog_translates_every_string_of_the_panel():
    catalog = {m.id: m.string for m in hungarian() if m.id}
    missing = sorted(map(str, source_strings() - set(catalog)))
    untranslated = sorted(str(k) for k, v in catalog.items() if not (all(v) if isinstance(v, tuple) else v))
    assert (missing, untranslated) == ([], [])


def visible_text(page: str) -> str:
    """What a person reads or hears: text and the hover and screen-reader texts, without code,
    a copy's own header lines, and what the page marks as English on purpose (Prometheus's
    help texts)."""
    said = " ".join(re.findall(r'(?:title|aria-label|placeholder)="([^"]*)"', page))
    page = re.sub(r'(?s)<table class="headers">.*?</table>', " ", page)
    page = re.sub(r'(?s)<(script|style|svg|code)\b.*?</\1>|<td lang="en">.*?</td>', " ", page)
    return html.unescape(re.sub(r"<[^>]+>", " ", page) + " " + said)


def english_only() -> set[str]:
    """The English words and phrases of the catalog whose Hungarian differs (a piece between
    placeholders, five letters or more)."""
    out = set()
    for m in hungarian():
        for en, hu in zip(m.id if isinstance(m.id, tuple) else (m.id,),
                          m.string if isinstance(m.string, tuple) else (m.string,)):
            for piece in re.split(r"%\([a-z_]+\)s|<[^>]+>", en):
                piece = piece.strip(" .,:;()“”·")
                if len(piece) >= 5 and piece.lower() not in hu.lower():
                    out.add(piece)
    return out


def leftovers_in(text: str, english: set[str]) -> list[str]:
    return sorted(e for e in english if re.search(rf"(?<!\w){re.escape(e)}(?!\w)", text))


async def test_hungarian_pages_have_no_english_leftovers(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    await add_user(app, "root@example.com", admin=True)
    mid = await send_mail(app, subject="Ajánlat [track]", track="")
    copy = await tracked_urls(app, mid)
    async with aiohttp.ClientSession() as hits:  # a person and an image proxy open it, a scanner clicks
        await hit(hits, app, copy.pixel, ip=READER_IP)
        await hit(hits, app, copy.pixel, ip="66.249.84.1", ua=GOOGLE_PROXY)
        await hit(hits, app, copy.clicks[0], ip=READER_IP)
    await wait_until(lambda: _events(app, mid, 3))
    await app.store.erase_subject("carol@example.net", keep_trackable=False, now=time.time())  # a digest listed
    for who in (ALICE, "root@example.com"):
        await app.store.update_user(who, UserChanges(language="hu"))
    english = english_only()
    pages = {ALICE: ["/", "/?tracked=1&q=nincs", f"/messages/{mid}", "/notifications", "/settings", "/nowhere"],
             "root@example.com": ["/admin/users", "/admin/health", "/admin/privacy", f"/admin/privacy?address={BOB}"]}
    found = {}
    for who, paths in pages.items():
        async with client() as s:
            await login(s, app, who)
            for path in paths:
                _, page = await get(s, app, path)
                assert '<html lang="hu">' in page, path
                found[path] = leftovers_in(visible_text(page), english)
            async with s.post(url(app, "/notifications/read"), data={"csrf": "forged"}) as resp:
                assert resp.status == 403
                found["403"] = leftovers_in(visible_text(await resp.text()), english)
    async with client() as s:  # a visitor whose browser asks for Hungarian
        async with s.get(url(app, "/login"), headers={"Accept-Language": "hu"}) as resp:
            page = await resp.text()
        assert '<html lang="hu">' in page
        found["/login"] = leftovers_in(visible_text(page), english)
    assert {p: e for p, e in found.items() if e} == {}


async def _events(app, message_id: int, count: int) -> bool:
    report = await app.store.message_report(message_id, None)
    return report is not None and len(report.events) >= count


async def test_the_language_is_the_users_setting_else_the_browsers(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    async with client() as s:
        async with s.get(url(app, "/login"), headers={"Accept-Language": "hu-HU,hu;q=0.9,en;q=0.5"}) as resp:
            assert "<h1>Bejelentkezés</h1>" in await resp.text()
        async with s.get(url(app, "/login"), headers={"Accept-Language": "de,fr;q=0.8"}) as resp:
            assert "<h1>Log in</h1>" in await resp.text()  # English when we speak none of them
        await login(s, app)
        async with s.get(url(app, "/settings"), headers={"Accept-Language": "hu"}) as resp:
            assert "Beállítások" in await resp.text()
        await app.store.update_user(ALICE, UserChanges(language="en"))
        async with s.get(url(app, "/settings"), headers={"Accept-Language": "hu"}) as resp:
            assert "<h1>Settings</h1>" in await resp.text()  # her own choice wins


async def test_concurrent_requests_in_two_languages_do_not_mix(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    await add_user(app, "root@example.com")
    await app.store.update_user(ALICE, UserChanges(language="hu"))
    await app.store.update_user("root@example.com", UserChanges(language="en"))
    async with client() as hu, client() as en:
        await login(hu, app)
        await login(en, app, "root@example.com")
        answers = await asyncio.gather(*(get(s, app, "/settings") for s in [hu, en] * 20))
    said = [(re.search(r'<html lang="(\w+)">', page)[1], re.search(r"<h1>([^<]*)</h1>", page)[1]) for _, page in answers]
    assert said == [("hu", "Beállítások"), ("en", "Settings")] * 20


async def test_times_are_shown_in_the_users_zone_and_language(start_app, tmp_path):
    winter = datetime(2026, 1, 15, 9, 30, tzinfo=timezone.utc).timestamp()
    clock = FakeClock(winter)  # the relay's clock, which the panel's relative times follow
    app = await start_panel(start_app, tmp_path, clock=clock)
    await add_user(app, "root@example.com", admin=True)
    mid = await send_mail(app, subject="Zones")
    clock.advance(180)
    pages = {}
    for who, path in ((ALICE, f"/messages/{mid}"), ("root@example.com", f"/admin/privacy?address={BOB}")):
        async with client() as s:
            await login(s, app, who)
            await app.store.update_user(who, UserChanges(language="en", timezone=""))
            pages[path, "utc"] = html.unescape((await get(s, app, path))[1])
            await app.store.update_user(who, UserChanges(language="hu", timezone="Europe/Budapest"))
            pages[path, "budapest"] = html.unescape((await get(s, app, path))[1])
    sent = '<time datetime="2026-01-15T09:30:00Z" title="%s">%s</time>'
    for (path, where), page in pages.items():
        if where == "utc":
            assert sent % ("3 minutes ago", "Jan 15, 2026, 9:30:00\u202fAM UTC") in page, path
        else:  # UTC+1 in winter
            assert sent % ("3 perccel ezelőtt", "2026. jan. 15. 10:30:00 CET") in page, path
