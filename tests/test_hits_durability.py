"""The hits server under load and trouble: many concurrent hits, a locked or failing store,
a full queue, SIGTERM. Invariant 6: every hit is recorded or counted as dropped, and the
pixel never waits for the store."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import sys
from pathlib import Path

import aiohttp

from conftest import PASSWORD, add_user, make_config
from hits_helpers import (
    CHROME,
    READER_IP,
    FakeClock,
    copies_in,
    db_rows,
    deliver_tracked,
    events,
    hit,
    send,
    start_relay,
    tracked_mail,
    wait_until,
)
from relay.auth import hash_password
from relay.errors import StoreUnavailable
from relay.store.sqlite import SqliteStore


async def test_a_thousand_concurrent_pixels_are_all_recorded(sink, start_app, tmp_path):
    clock = FakeClock()
    app = await start_relay(start_app, tmp_path, sink, clock=clock)
    copies = await deliver_tracked(app, sink, ("bob@example.org", "carol@example.org"))
    clock.advance(120)
    urls = [c.pixel for c in copies.values()] * 500
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000)) as s:
        statuses = await asyncio.gather(*(hit(s, app, u, ip=f"203.0.113.{i % 250}") for i, u in enumerate(urls)))
    assert {r.status for r in statuses} == {200}
    await events(app, tmp_path, 1000)
    assert db_rows(tmp_path, "SELECT class, COUNT(*) FROM events GROUP BY class") == [("human", 1000)]
    # the rows are committed a moment before the writer hears back and counts them
    await wait_until(lambda: app.recorder.recorded.total() == 1000)
    assert app.recorder.dropped.total() == 0


async def test_hits_during_a_store_lock_are_answered_at_once_and_stored_after(sink, start_app, tmp_path):
    clock = FakeClock()
    app = await start_relay(start_app, tmp_path, sink, clock=clock)
    copy = (await deliver_tracked(app, sink))["bob@example.org"]
    clock.advance(120)
    async with aiohttp.ClientSession() as s:
        await hit(s, app, copy.pixel, ip=READER_IP)  # warm: the token is cached
        await events(app, tmp_path, 1)
        locker = sqlite3.connect(f"{tmp_path}/relay.db", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")  # no other connection may write now
        try:
            # answered while the store is locked (an answer that waited for its write could not come)
            replies = await asyncio.wait_for(
                asyncio.gather(*(hit(s, app, copy.pixel, ip=READER_IP) for _ in range(300))), 30)
            assert {r.status for r in replies} == {200}
            # and every answer came while its hit still waited to be written
            assert app.recorder.depth == 300
            assert db_rows(tmp_path, "SELECT COUNT(*) FROM events") == [(1,)]
        finally:
            locker.execute("ROLLBACK")
            locker.close()
    await events(app, tmp_path, 301)
    assert app.recorder.dropped.total() == 0


class FlakyStore(SqliteStore):
    """A store whose hit writes fail while `down` is set."""

    down = False
    attempts = 0

    async def record_hits(self, events):
        self.attempts += 1
        if self.down:
            raise StoreUnavailable("store write failed: disk I/O error")
        return await super().record_hits(events)


async def test_a_store_outage_is_counted_retried_and_loses_nothing(sink, start_app, tmp_path):
    store = FlakyStore(f"{tmp_path}/relay.db")
    clock = FakeClock()
    cfg = make_config(tmp_path, f"smtp://127.0.0.1:{sink.port}", http_trusted_proxies="127.0.0.1/32")
    app = await start_app(cfg, store=store, clock=clock)
    await add_user(app)
    copy = (await deliver_tracked(app, sink))["bob@example.org"]
    clock.advance(120)
    store.down = True
    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(hit(s, app, copy.pixel, ip=READER_IP) for _ in range(200)))
        await asyncio.gather(*(hit(s, app, u, ip=READER_IP) for u in copy.clicks))
        await wait_until(lambda: app.recorder.failures.total() >= 3)
        assert db_rows(tmp_path, "SELECT COUNT(*) FROM events") == [(0,)]
        store.down = False
    await events(app, tmp_path, 203)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{app.port('admin')}/metrics") as resp:
            text = await resp.text()
    failures = [line for line in text.splitlines() if line.startswith("trackrelay_hit_store_failures_total ")]
    assert failures and int(failures[0].split()[1]) >= 3
    assert "trackrelay_hits_dropped_total" in text and 'trackrelay_hits_dropped_total{' not in text


async def test_a_full_queue_counts_what_it_drops(sink, start_app, tmp_path):
    clock = FakeClock()
    app = await start_relay(start_app, tmp_path, sink, clock=clock, http_hit_queue_size="20")
    copy = (await deliver_tracked(app, sink))["bob@example.org"]
    clock.advance(120)
    async with aiohttp.ClientSession() as s:
        await hit(s, app, copy.pixel, ip=READER_IP)
        await events(app, tmp_path, 1)
        locker = sqlite3.connect(f"{tmp_path}/relay.db", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            replies = await asyncio.gather(*(hit(s, app, copy.pixel, ip=READER_IP) for _ in range(100)))
            assert {r.status for r in replies} == {200}  # the pixel is served whatever happens
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        await wait_until(lambda: app.recorder.depth == 0)
        stored = db_rows(tmp_path, "SELECT COUNT(*) FROM events")[0][0] - 1
        dropped = app.recorder.dropped.get("queue_full")
        assert dropped > 0 and stored + dropped == 100  # invariant 6: recorded or counted
        async with s.get(f"http://127.0.0.1:{app.port('admin')}/metrics") as resp:
            assert f'trackrelay_hits_dropped_total{{reason="queue_full"}} {dropped}' in await resp.text()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_sigterm_flushes_every_queued_hit(tmp_path: Path):
    store = SqliteStore(str(tmp_path / "relay.db"))
    await store.open()
    await store.add_user("alice@example.com", hash_password(PASSWORD))
    await store.close()
    smtp, http, admin = _free_port(), _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    env.update({
        "TRACKRELAY_SMTP_LISTEN": f"127.0.0.1:{smtp}", "TRACKRELAY_HTTP_LISTEN": f"127.0.0.1:{http}",
        "TRACKRELAY_ADMIN_LISTEN": f"127.0.0.1:{admin}", "TRACKRELAY_STORE_URL": f"sqlite:///{tmp_path}/relay.db",
        "TRACKRELAY_UPSTREAM_URL": "capture:", "TRACKRELAY_SMTP_HOSTNAME": "relay.test",
        "TRACKRELAY_HTTP_PUBLIC_URL": f"http://127.0.0.1:{http}",
    })
    trackrelay = str(Path(sys.executable).with_name("trackrelay"))
    proc = await asyncio.create_subprocess_exec(trackrelay, "serve", env=env, cwd=tmp_path,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        async with aiohttp.ClientSession() as s:
            async def up() -> bool:
                try:
                    async with s.get(f"http://127.0.0.1:{http}/healthz") as resp:
                        return resp.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            try:
                await wait_until(up, timeout=20)
            except AssertionError:
                if proc.returncode is None:
                    proc.kill()
                raise AssertionError((await proc.communicate())[1].decode()) from None
            await send(smtp, tracked_mail("alice@example.com", ["bob@example.org"]), "alice@example.com",
                       ["bob@example.org"])
            await wait_until(lambda: db_rows(tmp_path, "SELECT COUNT(*) FROM captured")[0][0] == 1)
            [(data,)] = db_rows(tmp_path, "SELECT data FROM captured")
            pixel = copies_in(data).pixel
            replies = await asyncio.gather(*(
                s.get(pixel, headers={"User-Agent": CHROME}) for _ in range(500)))
            assert {r.status for r in replies} == {200}
            proc.send_signal(signal.SIGTERM)  # at once: most hits are still in the queue
            for r in replies:
                r.release()
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM events") == [(500,)]
