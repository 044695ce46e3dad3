"""No mail is lost: kill -9 of a real `trackrelay serve`, upstream down, restart."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections import Counter
from contextlib import closing
from email.parser import BytesParser
from pathlib import Path

import aiosmtplib

from conftest import PASSWORD, Sink, SinkSMTP
from hits_helpers import wait_until

TRACKRELAY = str(Path(sys.executable).parent / "trackrelay")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def relay_env(tmp_path: Path, smtp_port: int, sink_port: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    env.update({
        "TRACKRELAY_SMTP_LISTEN": f"127.0.0.1:{smtp_port}",
        "TRACKRELAY_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
        "TRACKRELAY_ADMIN_LISTEN": f"127.0.0.1:{free_port()}",
        "TRACKRELAY_STORE_URL": f"sqlite:///{tmp_path}/relay.db",
        "TRACKRELAY_UPSTREAM_URL": f"smtp://127.0.0.1:{sink_port}",
        "TRACKRELAY_UPSTREAM_TIMEOUT": "5",
        # deferred mail keeps its schedule across a restart: short, so the tests need not wait
        "TRACKRELAY_DELIVERY_RETRY_INTERVALS": "2s",
    })
    return env


def relay_with_user(tmp_path: Path) -> tuple[dict, int, int]:
    """(environment, SMTP port, upstream port) of a relay whose store has the test user."""
    smtp_port, sink_port = free_port(), free_port()
    env = relay_env(tmp_path, smtp_port, sink_port)
    add_user(env)
    return env, smtp_port, sink_port


async def start_relay(env: dict, port: int, log: Path) -> subprocess.Popen:
    with log.open("ab") as err:
        proc = subprocess.Popen([TRACKRELAY, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=err)
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return proc
        except OSError:
            assert proc.poll() is None, log.read_text()
            await asyncio.sleep(0.05)
    raise AssertionError("relay did not start")


async def start_sink(port: int) -> tuple[Sink, asyncio.base_events.Server]:
    sink = Sink(port=port)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkSMTP(sink, data_size_limit=None, loop=loop), "127.0.0.1", port)
    return sink, server


async def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    """Signal and wait without blocking the loop: the sink in this process must keep answering."""
    proc.send_signal(sig)
    return await asyncio.to_thread(proc.wait, 30)


def mail(i: int) -> bytes:
    return (f"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: n{i}\r\n"
            f"Message-ID: <mail-{i}@example.com>\r\n\r\nbody {i}\r\n").encode()


async def send_all(port: int, count: int) -> None:
    async def one(i: int) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        await client.login("alice@example.com", PASSWORD)
        await client.sendmail("alice@example.com", ["bob@example.org"], mail(i))
        await client.quit()

    await asyncio.gather(*(one(i) for i in range(count)))


def add_user(env: dict) -> None:
    subprocess.run([TRACKRELAY, "user", "add", "alice@example.com", "--password-stdin"], env=env,
                   input=PASSWORD + "\n", text=True, check=True, capture_output=True, timeout=60)


def message_ids(sink: Sink) -> list[str]:
    return sorted(BytesParser().parsebytes(m.data)["Message-ID"] for m in sink.messages)


def statuses(tmp_path: Path) -> Counter:
    """The relay's own record of its queue, read from its store file."""
    with closing(sqlite3.connect(tmp_path / "relay.db")) as db:
        return Counter(dict(db.execute("SELECT status, COUNT(*) FROM messages GROUP BY status").fetchall()))


def all_mail(count: int) -> list[str]:
    return sorted(f"<mail-{i}@example.com>" for i in range(count))


async def test_kill_9_with_the_upstream_down_then_restart_delivers_each_mail_once(tmp_path):
    env, smtp_port, sink_port = relay_with_user(tmp_path)
    relay = await start_relay(env, smtp_port, tmp_path / "relay.log")
    server = None
    try:
        await send_all(smtp_port, 30)  # every 250 means: on disk
        await wait_until(lambda: statuses(tmp_path)["deferred"] == 30)  # each tried against the closed port
        await stop(relay, signal.SIGKILL)
        sink, server = await start_sink(sink_port)
        relay = await start_relay(env, smtp_port, tmp_path / "relay.log")
        await wait_until(lambda: statuses(tmp_path)["sent"] == 30, timeout=30)
        # recorded as sent: nothing is claimed again, so the sink has all it will ever get
        assert message_ids(sink) == all_mail(30)
    finally:
        if server:
            server.close()  # before any failed assertion: an open sink hangs the loop's close
        assert await stop(relay) == 0


async def test_kill_9_mid_delivery_delivers_each_mail_once(tmp_path):
    env, smtp_port, sink_port = relay_with_user(tmp_path)
    sink, server = await start_sink(sink_port)
    relay = await start_relay(env, smtp_port, tmp_path / "relay.log")
    await send_all(smtp_port, 40)
    await stop(relay, signal.SIGKILL)  # some mail is out, some in flight, some waiting
    relay = await start_relay(env, smtp_port, tmp_path / "relay.log")
    try:
        await wait_until(lambda: statuses(tmp_path)["sent"] == 40, timeout=30)
        # the delivery process outlives a kill -9 of `serve` long enough to finish and record
        # the mail it has in flight (relay/delivery_process.py), so none goes twice
        assert message_ids(sink) == all_mail(40)
    finally:
        server.close()
        assert await stop(relay) == 0


async def test_sigterm_is_a_clean_exit_and_keeps_queued_mail(tmp_path):
    env, smtp_port, sink_port = relay_with_user(tmp_path)
    relay = await start_relay(env, smtp_port, tmp_path / "relay.log")
    await send_all(smtp_port, 5)
    assert await stop(relay) == 0
    assert "Traceback" not in (tmp_path / "relay.log").read_text()
    sink, server = await start_sink(sink_port)
    relay = await start_relay(env, smtp_port, tmp_path / "relay.log")
    try:
        await sink.wait_for(5, timeout=20)
    finally:
        server.close()
        await stop(relay)


def test_a_taken_port_is_one_clear_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        env = relay_env(tmp_path, port, free_port())
        out = subprocess.run([TRACKRELAY, "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("trackrelay: smtp.listen: cannot listen on 127.0.0.1:") and "Traceback" not in out.stderr


def test_an_unreachable_store_is_one_clear_line(tmp_path):
    env = relay_env(tmp_path, free_port(), free_port())
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    env["TRACKRELAY_STORE_URL"] = f"sqlite:///{blocker}/relay.db"
    out = subprocess.run([TRACKRELAY, "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("trackrelay: cannot open store sqlite:///")
