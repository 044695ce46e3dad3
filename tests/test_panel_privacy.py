"""The admins' privacy page: the report, the lists with their records, a person's data and
its erasure, all through the panel's forms (session, CSRF) on a real relay."""
from __future__ import annotations

import html
import json
import re

from conftest import add_user, both_engines
from panel_helpers import ALICE, BOB, client, csrf_in, get, login, send_mail, start_panel, url

ROOT = "root@example.com"


async def post(s, app, path: str, data: dict) -> tuple[int, str]:
    async with s.post(url(app, path), data=data, allow_redirects=False) as resp:
        await resp.read()
        return resp.status, resp.headers.get("Location", "")


@both_engines
async def test_an_admin_reads_the_report_edits_the_lists_and_erases_a_person(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path, privacy_retention_days="90")
    await add_user(app, ROOT, admin=True)
    await send_mail(app, rcpts=(BOB, "carol@example.org"), subject="<b>Offer</b>")
    async with client() as s:
        await login(s, app, ROOT)
        resp, page = await get(s, app, "/admin/privacy")
        assert resp.status == 200 and "Kept: 90 days, purged daily at 03:30" in page
        token = csrf_in(page)
        assert await post(s, app, "/admin/privacy/list", {"kind": "dnt", "action": "add", "entry": "@Spam.example",
                                                           "csrf": "forged"}) == (403, "")
        assert (await post(s, app, "/admin/privacy/list", {"kind": "dnt", "action": "add", "entry": "@Spam.example",
                                                            "csrf": token}))[0] == 303
        [record] = await app.store.privacy_records("dnt")
        assert (record.entry, record.source, record.recorded_by) == ("@spam.example", "panel", ROOT)
        status, where = await post(s, app, "/admin/privacy/list", {"kind": "consent", "action": "add",
                                                                    "entry": "@nope.example", "csrf": token})
        assert status == 303 and "error=" in where

        resp, page = await get(s, app, f"/admin/privacy?address={BOB}")
        assert "1 mail(s) sent to bob@example.org" in page and "&lt;b&gt;Offer&lt;/b&gt;" in page
        resp, body = await get(s, app, f"/admin/privacy/export?address={BOB}")
        assert resp.headers["Content-Disposition"].startswith("attachment")
        assert [m["subject"] for m in json.loads(body)["mails"]] == ["<b>Offer</b>"]

        status, where = await post(s, app, "/admin/privacy/erase", {"address": BOB, "csrf": token})
        assert status == 303
        resp, page = await get(s, app, where)
        notice = html.unescape(re.search(r'<p class="notice" role="status">(.*?)</p>', page).group(1))
        # both captured copies name bob (carol's in its To: header)
        assert notice == "Erased bob@example.org: 1 copy, 1 recipient row, 2 captured copies. On the do-not-track list (as a digest)."
        assert (await app.store.subject(BOB)).mails == ()
        assert len((await app.store.subject("carol@example.org")).mails) == 1


async def test_the_privacy_page_is_for_admins_only(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    async with client() as s:
        await login(s, app, ALICE)
        resp, page = await get(s, app, "/")
        assert "/admin/privacy" not in page
        for path in ("/admin/privacy", f"/admin/privacy/export?address={BOB}"):
            assert (await get(s, app, path))[0].status == 404
        token = csrf_in(page)
        assert (await post(s, app, "/admin/privacy/erase", {"address": BOB, "csrf": token}))[0] == 404
