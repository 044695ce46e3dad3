"""Screenshots of the panel's main pages in English and Hungarian, for the README.

  .venv/bin/python scripts/screenshots.py [OUT_DIR]   (default docs/screenshots)

Starts a relay in this process on loopback ports (SQLite in a temporary directory, the
capture upstream), sends a few tracked mails through it, opens them as people and as
machines would, then photographs the pages in headless Chromium (/usr/bin/chromium).
"""
from __future__ import annotations

import asyncio
import re
import sys
import tempfile
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from email.utils import make_msgid
from pathlib import Path

import aiohttp
import aiosmtplib
from playwright.async_api import async_playwright

from relay import config
from relay.auth import hash_password
from relay.records import UserChanges
from trackrelay.app import App

USER, ADMIN, PASSWORD = "anna@example.com", "admin@example.com", "screenshots only"
PERSON = {"User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Thunderbird/128.3.0",
          "X-Forwarded-For": "203.0.113.77"}
APPLE = {"User-Agent": "Mozilla/5.0", "X-Forwarded-For": "17.58.100.1"}
MAILS = [("Proposal for Q3 [track]", ["peter@client.example", "eva@client.example"], PERSON),
         ("Invoice 2026-114 [track]", ["billing@vendor.example"], APPLE),
         ("Lunch on Friday?", ["colleague@example.com"], None),
         ("Partnership follow-up [track]", ["ceo@partner.example"], PERSON)]
PAGES = [("list", "/"), ("message", "/messages/1"), ("settings", "/settings"), ("privacy", "/admin/privacy")]


def mail(subject: str, rcpts: list[str]) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = USER, ", ".join(rcpts), subject
    msg["Message-ID"] = make_msgid(domain="example.com")
    msg.set_content("Hello,\n\nplease find the details below.\n")
    msg.add_alternative('<p>Hello,</p><p>please see <a href="https://example.com/offer">the offer</a> and '
                        '<a href="https://example.com/terms">the terms</a>.</p>', subtype="html")
    return msg.as_bytes()


async def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config.load(None, {"TRACKRELAY_STORE_URL": f"sqlite:///{tmp}/relay.db",
                                 "TRACKRELAY_SMTP_LISTEN": "127.0.0.1:0", "TRACKRELAY_HTTP_LISTEN": "127.0.0.1:0",
                                 "TRACKRELAY_ADMIN_LISTEN": "127.0.0.1:0", "TRACKRELAY_UPSTREAM_URL": "capture:",
                                 "TRACKRELAY_HTTP_TRUSTED_PROXIES": '["127.0.0.1/32"]',
                                 "TRACKRELAY_TRACKING_MACHINE_WINDOW": "1ms"})
        app = App(cfg)
        await app.start()
        try:
            await app.store.add_user(USER, hash_password(PASSWORD))
            await app.store.add_user(ADMIN, hash_password(PASSWORD), is_admin=True)
            await send_and_open(app)
            await photograph(app, out)
        finally:
            await app.stop()


async def send_and_open(app: App) -> None:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=app.port("smtp"), start_tls=False)
    await smtp.connect()
    await smtp.login(USER, PASSWORD)
    for subject, rcpts, _ in MAILS:
        await smtp.sendmail(USER, rcpts, mail(subject, rcpts))
    await smtp.quit()
    while (await app.store.queue_counts()).get("queued"):
        await asyncio.sleep(0.1)
    hits = f"http://127.0.0.1:{app.port('hits')}"
    async with aiohttp.ClientSession() as http:
        for (_, _, reader), report in zip(MAILS, reversed(await app.store.message_reports(None))):
            if reader is None:
                continue
            [first, *_] = await app.store.captured(report.id)
            body = message_from_bytes(first.data, policy=default).get_body(("html",)).get_content()
            await http.get(hits + re.search(r'/o/[^"]+', body).group(0), headers=reader)
            if reader is PERSON:
                await http.get(hits + re.search(r'/c/[^"]+', body).group(0), headers=reader, allow_redirects=False)
    await asyncio.sleep(1)  # the hits are written behind


async def photograph(app: App, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{app.port('admin')}"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            for language in ("en", "hu"):
                for who in (USER, ADMIN):
                    await app.store.update_user(who, UserChanges(language=language, timezone="Europe/Budapest"))
                page = await browser.new_page(viewport={"width": 1200, "height": 760})
                for name, path in PAGES:
                    who = ADMIN if path.startswith("/admin") else USER
                    await page.context.clear_cookies()
                    await page.goto(base + "/login")
                    await page.fill('input[name="email"]', who)
                    await page.fill('input[name="password"]', PASSWORD)
                    await page.click('button[type="submit"]')
                    await page.wait_for_url(base + "/")
                    await page.goto(base + path)
                    await page.screenshot(path=str(out / f"{name}-{language}.png"))
                await page.close()
        finally:
            await browser.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots")))
