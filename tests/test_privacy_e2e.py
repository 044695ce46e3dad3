"""The privacy lifecycle on a running relay, on both engines: the daily retention purge
(injected clock), an access request and an erasure over the API and the command line."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from datetime import datetime
from pathlib import Path

import aiohttp
import aiosmtplib
import pytest

from conftest import add_user, both_engines
from hits_helpers import (
    CHROME, LINKS, READER_IP, THUNDERBIRD, FakeClock, deliver_tracked, events, hit, send, start_relay, tracked_mail,
    wait_until,
)
from test_api import api, token_for
from tests.store.test_privacy import store_text

pytestmark = both_engines
BOB = "bob@example.org"
TRACKRELAY = str(Path(sys.executable).with_name("trackrelay"))


def one_second_before_a_minute(near: float) -> tuple[float, str]:
    """A start time at hh:mm:59 (local) and the purge time hh:mm+1 that follows it."""
    start = near - near % 60 + 59
    return start, datetime.fromtimestamp(start + 1).strftime("%H:%M")


async def test_the_daily_purge_removes_old_activity_and_old_links_still_redirect(sink, start_app, tmp_path):
    start, purge_time = one_second_before_a_minute(1_800_000_000.0)
    clock = FakeClock(start)
    app = await start_relay(start_app, tmp_path, sink, clock=clock, privacy_retention_days="30",
                            privacy_purge_time=purge_time)
    token = await token_for(app)
    bob = (await deliver_tracked(app, sink, (BOB,)))[BOB]
    async with aiohttp.ClientSession() as s:
        clock.advance(0.5)  # still before the purge time: nothing goes
        assert (await hit(s, app, bob.pixel, ua=THUNDERBIRD, ip=READER_IP)).status == 200
        assert (await hit(s, app, bob.clicks[1], ua=CHROME, ip=READER_IP)).headers["Location"] == LINKS[1]
        await events(app, tmp_path, 2)
        _, listed, _ = await api(s, app, "/api/v1/messages", token)
        assert len(listed["messages"]) == 1

        clock.advance(31 * 86400)  # a month later, past the purge time: the server purges on its own

        async def purged() -> bool:
            return (await api(s, app, "/api/v1/messages", token))[1]["messages"] == []

        await wait_until(purged, timeout=15)
        assert await events(app, tmp_path, 0) == []
        click = await hit(s, app, bob.clicks[1], ua=CHROME, ip=READER_IP)
        assert (click.status, click.headers["Location"]) == (302, LINKS[1])  # the old mail's link still works
        pixel = await hit(s, app, bob.pixel, ua=THUNDERBIRD, ip=READER_IP)
        assert pixel.status == 200 and pixel.headers["Content-Type"] == "image/gif"
        assert (await hit(s, app, bob.clicks[1].rsplit("/", 1)[0] + "/9")).status == 404
        await asyncio.sleep(0.3)
        assert await events(app, tmp_path, 0) == []  # hits on purged mail record nothing


@pytest.mark.parametrize("via", ["api", "cli"])
async def test_access_then_erasure_of_an_address_leaves_no_trace(sink, start_app, tmp_path, via):
    app = await start_relay(start_app, tmp_path, sink)
    await add_user(app, "root@example.com", admin=True)
    admin_token = await token_for(app, "root@example.com")
    copies = await deliver_tracked(app, sink, (BOB, "carol@example.org"), subject="Offer for Bob")
    async with aiohttp.ClientSession() as s:
        await hit(s, app, copies[BOB].pixel, ua=THUNDERBIRD, ip=READER_IP)
        await hit(s, app, copies["carol@example.org"].pixel, ua=THUNDERBIRD, ip=READER_IP)
        await events(app, tmp_path, 2)
        status, held, _ = await api(s, app, f"/api/v1/privacy/subjects/{BOB.upper()}", admin_token)
        assert status == 200 and held["address"] == BOB
        [sent] = held["mails"]
        assert (sent["subject"], sent["sender"], sent["status"]) == ("Offer for Bob", "alice@example.com", "sent")
        assert [(e["type"], e["class"], e["ip"], e["user_agent"]) for e in sent["events"]] == [
            ("open", "human", "203.0.113.0", THUNDERBIRD)]
        user_token = await token_for(app)
        assert (await api(s, app, f"/api/v1/privacy/subjects/{BOB}", user_token))[0] == 403

        if via == "api":
            status, erased, _ = await api(s, app, f"/api/v1/privacy/subjects/{BOB}", admin_token, method="DELETE")
            assert status == 200 and (erased["recipients"], erased["copies"], erased["events"]) == (1, 1, 1)
        else:
            out = await run_cli(app, "erase", BOB, "--json")
            assert json.loads(out)["events"] == 1

        async def gone() -> bool:
            return all(BOB.encode() not in data.lower() for _, data in await store_text(app.cfg.store.url))

        await wait_until(gone, timeout=15)  # SQLite: within the checkpoint after an erase
        assert (await api(s, app, f"/api/v1/privacy/subjects/{BOB}", admin_token))[1]["mails"] == []
        carol = (await api(s, app, "/api/v1/privacy/subjects/carol@example.org", admin_token))[1]
        assert len(carol["mails"]) == 1 and len(carol["mails"][0]["events"]) == 1
    # the erased address stays untracked (as a digest on the do-not-track list)
    before = len(sink.messages)
    await send(app.port("smtp"), tracked_mail("alice@example.com", [BOB]), "alice@example.com", [BOB])
    [again] = (await sink.wait_for(before + 1))[before:]
    assert b"/o/" not in again.data and b"/c/" not in again.data


async def run_cli(app, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    env["TRACKRELAY_STORE_URL"] = app.cfg.store.url
    proc = await asyncio.create_subprocess_exec(TRACKRELAY, *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_export_over_the_command_line_is_json_only(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink)
    await deliver_tracked(app, sink, (BOB,))
    await run_cli(app, "consent", "add", BOB)
    held = json.loads(await run_cli(app, "export", BOB))
    assert [m["subject"] for m in held["mails"]] == ["Quarterly numbers"]
    assert [(r["entry"], r["source"]) for r in held["consent"]] == [(BOB, "cli")]


async def test_logs_at_info_name_no_recipient_no_reader_ip_and_no_content(sink, start_app, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    app = await start_relay(start_app, tmp_path, sink, privacy_retention_days="1")
    copies = await deliver_tracked(app, sink, (BOB, "carol@example.org"), subject="Secret merger plans")
    async with aiohttp.ClientSession() as s:
        for url in (copies[BOB].pixel, copies[BOB].clicks[0], copies[BOB].pixel + "x", "/c/nope/1"):
            await hit(s, app, url if url.startswith("http") else copies[BOB].pixel.split("/o/")[0] + url,
                      ua=THUNDERBIRD, ip=READER_IP)
        await events(app, tmp_path, 2)
    await run_cli(app, "purge")
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=app.port("smtp"), start_tls=False)
    await client.connect()
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await client.login("mallory@example.com", "wrong password")
    await client.quit()
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "AUTH failed for 'mallory@example.com'" in logged  # what the relay logs is seen here
    for secret in (BOB, "carol@example.org", READER_IP, "Secret merger plans", "see the numbers"):
        assert secret not in logged, secret
