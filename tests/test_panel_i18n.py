"""The panel's two languages: a complete Hungarian catalog, Hungarian pages without English
leftovers, the language chosen by the user's setting else Accept-Language, times in the
user's zone."""
from __future__ import annotations

import html
import re
from datetime import datetime, timezone
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from conftest import add_user
from hits_helpers import FakeClock
from panel_helpers import ALICE, BOB, client, get, login, send_mail, start_panel, url
from relay.records import UserChanges

ADMIN = Path(__file__).parent.parent / "admin"
HU = ADMIN / "locale/hu/LC_MESSAGES/messages.po"


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
    # code, a copy's own header lines, and what the page marks as English on purpose
    # (Prometheus's help texts)
    page = re.sub(r'(?s)<table class="headers">.*?</table>', " ", page)
    page = re.sub(r'(?s)<(script|style|svg|code)\b.*?</\1>|<td lang="en">.*?</td>', " ", page)
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


WORDS = {"Settings", "Privacy", "Notifications", "Recipients", "Subject", "Status", "Search", "Users", "Health"}


def english_only() -> set[str]:
    """The English strings whose Hungarian differs, longer than a word fragment."""
    out = set()
    for m in hungarian():
        for en, hu in zip(m.id if isinstance(m.id, tuple) else (m.id,),
                          m.string if isinstance(m.string, tuple) else (m.string,)):
            fixed = re.split(r"%\([a-z_]+\)s|<[^>]+>", en)
            for piece in fixed:
                piece = piece.strip(" .,:;()“”·")
                if piece not in hu and (len(piece) >= 6 and " " in piece or piece in WORDS):
                    out.add(piece)
    return out


async def test_hungarian_pages_have_no_english_leftovers(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    await add_user(app, "root@example.com", admin=True)
    mid = await send_mail(app, subject="Ajánlat [track]", track="")
    for who in (ALICE, "root@example.com"):
        await app.store.update_user(who, UserChanges(language="hu"))
    leftovers = english_only()
    pages = {ALICE: ["/", "/?tracked=1&q=nincs", f"/messages/{mid}", "/notifications", "/settings", "/nowhere"],
             "root@example.com": ["/admin/users", "/admin/health", f"/admin/privacy?address={BOB}"]}
    found = {}
    for who, paths in pages.items():
        async with client() as s:
            await login(s, app, who)
            for path in paths:
                _, page = await get(s, app, path)
                assert '<html lang="hu">' in page, path
                text = visible_text(page)
                found[path] = sorted(e for e in leftovers if e in text)
    assert {p: e for p, e in found.items() if e} == {}


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


async def test_times_are_shown_in_the_users_zone_and_language(start_app, tmp_path):
    winter = datetime(2026, 1, 15, 9, 30, tzinfo=timezone.utc).timestamp()
    clock = FakeClock(winter)  # the relay's clock, which the panel's relative times follow
    app = await start_panel(start_app, tmp_path, clock=clock)
    mid = await send_mail(app, subject="Zones")
    clock.advance(180)
    async with client() as s:
        await login(s, app)
        await app.store.update_user(ALICE, UserChanges(language="en", timezone=""))
        _, utc = await get(s, app, f"/messages/{mid}")
        await app.store.update_user(ALICE, UserChanges(language="hu", timezone="Europe/Budapest"))
        _, budapest = await get(s, app, f"/messages/{mid}")
    sent = '<time datetime="2026-01-15T09:30:00Z" title="%s">%s</time>'
    assert sent % ("3 minutes ago", "Jan 15, 2026, 9:30:00\u202fAM UTC") in html.unescape(utc)
    assert sent % ("3 perccel ezelőtt", "2026. jan. 15. 10:30:00 CET") in html.unescape(budapest)  # UTC+1 in winter
