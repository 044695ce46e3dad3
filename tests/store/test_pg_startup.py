"""store.url = postgresql://...: the commands work on it, and an unreachable server is one clear line."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

TRACKRELAY = str(Path(sys.executable).parent / "trackrelay")


def trackrelay(store_url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    env.update(TRACKRELAY_STORE_URL=store_url, TRACKRELAY_SMTP_LISTEN="127.0.0.1:0",
               TRACKRELAY_HTTP_LISTEN="127.0.0.1:0", TRACKRELAY_ADMIN_LISTEN="127.0.0.1:0")
    return subprocess.run([TRACKRELAY, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)


def test_commands_run_on_postgresql(pg_url):
    added = trackrelay(pg_url, "user", "add", "alice@example.com", "--password-stdin", stdin="long enough pw\n")
    assert added.returncode == 0, added.stderr
    assert trackrelay(pg_url.replace("postgresql://", "postgres://"), "user", "list").stdout.split() == [
        "alice@example.com"]


def test_an_unreachable_postgresql_is_one_clear_line_naming_the_address():
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        url = f"postgresql://relay:secret-pw@127.0.0.1:{port}/relay"
        for args in (("serve",), ("user", "list")):
            out = trackrelay(url, *args)
            assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
            last = out.stderr.strip().splitlines()[-1]
            assert last.startswith(f"trackrelay: cannot open store postgresql://relay@127.0.0.1:{port}/relay: ")
            assert "secret-pw" not in out.stderr


async def test_serve_starts_on_postgresql_and_stops_cleanly(pg_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    env.update(TRACKRELAY_STORE_URL=pg_url, TRACKRELAY_SMTP_LISTEN="127.0.0.1:0", TRACKRELAY_HTTP_LISTEN="127.0.0.1:0",
               TRACKRELAY_ADMIN_LISTEN="127.0.0.1:0")
    proc = await asyncio.create_subprocess_exec(TRACKRELAY, "serve", env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert re.fullmatch(rb"first admin: admin@localhost password: \S+\n", line), line
        async def running() -> bytes:  # every part, the delivery child too, is up once serve says so
            while (log := await proc.stderr.readline()) and b"trackrelay running" not in log:
                pass
            return log

        assert b"trackrelay running" in await asyncio.wait_for(running(), 30)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
