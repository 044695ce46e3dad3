"""`serve` delivers from a child process: woken per mail, restarted when it dies, gone with its parent."""
from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from hits_helpers import wait_until
from relay.delivery_process import DeliveryProcess, parse_counts
from relay.errors import StartupError
from test_durability import relay_with_user, send_all, start_relay, start_sink, stop


def delivery_children(pid: int) -> list[int]:
    """PIDs of `serve --only delivery --child` processes whose parent is pid (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:  # it just ended
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"--child" in argv:
                found.append(int(entry.name))
    return found


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def delivery_pids(log: Path) -> list[int]:
    return [int(p) for p in re.findall(r"delivery runs in process (\d+)", log.read_text())]


async def delivered_total(env: dict) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{env['TRACKRELAY_ADMIN_LISTEN']}/metrics") as resp:
            text = await resp.text()
    return int(float(re.search(r'^trackrelay_deliveries_total\{result="delivered"\} (\S+)$', text, re.M).group(1)))


async def delivered(env: dict, expected: int) -> bool:
    return await delivered_total(env) == expected


def test_the_child_reports_only_well_formed_counts():
    assert parse_counts(b'{"sent": 3, "deferred": 1}\n', {}) == {"sent": 3, "deferred": 1}
    assert parse_counts(b"not json\n", {"sent": 2}) == {"sent": 2}
    assert parse_counts(b'{"sent": "3"}\n', {"sent": 2}) == {"sent": 2}
    assert parse_counts(b"[1]\n", {"sent": 2}) == {"sent": 2}


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def test_a_child_that_dies_while_starting_is_a_startup_error():
    child = DeliveryProcess(python("import sys; sys.exit(3)"))
    with pytest.raises(StartupError, match=r"did not start \(exit status 3"):
        await child.start()


async def test_a_child_that_never_says_ready_is_killed_and_a_startup_error():
    child = DeliveryProcess(python("import time; time.sleep(60)"), start_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(StartupError, match=r"exit status -9"):
        await child.start()
    assert time.monotonic() - started < 10


async def test_a_child_that_ignores_the_end_of_its_stdin_is_killed_at_stop():
    child = DeliveryProcess(python("import time; print('ready', flush=True); time.sleep(60)"), stop_timeout=0.5)
    await child.start()
    started = time.monotonic()
    await child.stop()
    assert time.monotonic() - started < 10


async def test_a_killed_delivery_process_is_replaced_and_its_counts_kept(tmp_path):
    env, smtp_port, sink_port = relay_with_user(tmp_path)
    log = tmp_path / "relay.log"
    sink, server = await start_sink(sink_port)
    relay = await start_relay(env, smtp_port, log)
    try:
        await wait_until(lambda: delivery_pids(log), 20)
        first = delivery_pids(log)[0]
        assert first in delivery_children(relay.pid)
        await send_all(smtp_port, 5)
        await sink.wait_for(5, timeout=20)
        await wait_until(lambda: delivered(env, 5), 5)  # the child reports within a second
        os.kill(first, signal.SIGKILL)
        await wait_until(lambda: len(delivery_pids(log)) == 2, 20)
        second = delivery_pids(log)[1]
        assert second != first and second in delivery_children(relay.pid)
        await send_all(smtp_port, 5)
        await sink.wait_for(10, timeout=20)
        await wait_until(lambda: delivered(env, 10), 5)  # the dead child's count plus the new one's
        assert len(sink.messages) == 10  # the same five mails sent twice, each time delivered once
        assert "exited with status -9: starting another" in log.read_text()
    finally:
        server.close()
        assert await stop(relay) == 0
    assert gone(second)


async def test_the_delivery_process_ends_with_a_killed_parent(tmp_path):
    env, smtp_port, _ = relay_with_user(tmp_path)
    log = tmp_path / "relay.log"
    relay = await start_relay(env, smtp_port, log)
    await wait_until(lambda: delivery_pids(log), 20)
    child = delivery_pids(log)[0]
    await stop(relay, signal.SIGKILL)
    await wait_until(lambda: gone(child), 20)  # its stdin ended: it finishes and exits, no orphan left


async def test_delivery_stays_in_the_serve_process_when_configured_or_passthrough(tmp_path):
    for name, value in (("TRACKRELAY_DELIVERY_SEPARATE_PROCESS", "false"), ("TRACKRELAY_UPSTREAM_AUTH", "passthrough")):
        run = tmp_path / name
        run.mkdir()
        env, smtp_port, _ = relay_with_user(run)
        env[name] = value
        log = run / "relay.log"
        relay = await start_relay(env, smtp_port, log)
        try:
            await wait_until(lambda: "trackrelay running" in log.read_text(), 20)
            assert delivery_children(relay.pid) == [] and delivery_pids(log) == []
        finally:
            assert await stop(relay) == 0
