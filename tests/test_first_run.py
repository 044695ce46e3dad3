"""The `make run` contract and the README's five-minute tour, for real: `trackrelay serve` as a
subprocess with its built-in defaults (SQLite under ./var, the capture: upstream) in an empty
directory, only the ports moved to free ones; then the README's own commands, read out of
README.md, against it."""
from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import aiosmtplib

from conftest import PASSWORD, require_tool
from hits_helpers import copies_in, wait_until
from panel_helpers import client, get, login
from test_durability import free_port

TRACKRELAY = str(Path(sys.executable).parent / "trackrelay")
README = Path(__file__).resolve().parent.parent / "README.md"
FIRST_ADMIN = re.compile(r"first admin: admin@localhost password: (\S+)")


@dataclass
class Relay:
    """A running `trackrelay serve`; port(name) as App.port, so panel_helpers work with it."""

    proc: subprocess.Popen
    ports: dict[str, int]
    stdout: Path
    stderr: Path

    def port(self, name: str) -> int:
        return self.ports[name]

    def out(self) -> str:
        return self.stdout.read_text()


def defaults_env(ports: dict[str, int]) -> dict[str, str]:
    """`make run`'s environment: built-in defaults, except the ports (and the public URL that
    names the hits port), so the test never meets a relay someone else started."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    env.update({
        "TRACKRELAY_SMTP_LISTEN": f"127.0.0.1:{ports['smtp']}",
        "TRACKRELAY_HTTP_LISTEN": f"127.0.0.1:{ports['hits']}",
        "TRACKRELAY_ADMIN_LISTEN": f"127.0.0.1:{ports['admin']}",
        "TRACKRELAY_HTTP_PUBLIC_URL": f"http://127.0.0.1:{ports['hits']}",
    })
    return env


async def serve(workdir: Path, env: dict[str, str], ports: dict[str, int], run: int) -> Relay:
    out, err = workdir / f"stdout.{run}", workdir / f"stderr.{run}"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen([TRACKRELAY, "serve"], env=env, cwd=workdir, stdout=o, stderr=e)
    relay = Relay(proc, ports, out, err)
    # "trackrelay running" is logged after the first-admin line and after every listener is up
    for _ in range(600):
        if "trackrelay running" in err.read_text():
            return relay
        if proc.poll() is not None:
            raise AssertionError(f"trackrelay serve exited {proc.returncode}:\n{err.read_text()}")
        await asyncio.sleep(0.05)
    await stop(relay)
    raise AssertionError("trackrelay serve did not start:\n" + err.read_text())


async def stop(relay: Relay) -> int:
    if relay.proc.poll() is None:
        relay.proc.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(relay.proc.wait, 30)


def cli(workdir: Path, env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([TRACKRELAY, *args], env=env, cwd=workdir, input=stdin, text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


async def smtp_login(port: int, user: str, password: str) -> None:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await smtp.connect()
    try:
        await smtp.login(user, password)
    finally:
        await smtp.quit()


async def test_first_start_prints_the_admin_password_once(tmp_path):
    ports = {"smtp": free_port(), "hits": free_port(), "admin": free_port()}
    env = defaults_env(ports)
    relay = await serve(tmp_path, env, ports, 1)
    try:
        lines = relay.out().splitlines()
        matches = [m for m in map(FIRST_ADMIN.fullmatch, lines) if m]
        assert len(matches) == 1, lines
        password = matches[0].group(1)
        assert "first admin" not in relay.stderr.read_text()  # printed, not logged
        # the embedded default store, under ./var
        assert (tmp_path / "var" / "trackrelay.db").is_file()
        # the password works for SMTP AUTH on the relay ...
        await smtp_login(ports["smtp"], "admin@localhost", password)
        # ... and for the panel's login form (with its CSRF token)
        async with client() as s:
            resp = await login(s, relay, "admin@localhost", password)
            assert resp.status == 303 and resp.headers["Location"] == "/"
            resp, page = await get(s, relay, "/")
            assert resp.status == 200 and "admin@localhost" in page
            resp = await login(s, relay, "admin@localhost", password + "x")
            assert resp.status != 303
    finally:
        assert await stop(relay) == 0
    # a second start on the same store prints nothing of the kind, and the password still works
    relay = await serve(tmp_path, env, ports, 2)
    try:
        assert "first admin" not in relay.out()
        await smtp_login(ports["smtp"], "admin@localhost", password)
    finally:
        assert await stop(relay) == 0


def readme_tour() -> str:
    text = README.read_text()
    start = text.index("## Five-minute tour")
    return text[start:text.index("\n## ", start + 1)]


def readme_command(tour: str, program: str, first_arg: str) -> list[str]:
    """The README's command line (backslash continuations joined, comments dropped, the
    command inside a `$(...)` substitution taken out)."""
    for block in re.findall(r"```sh\n(.*?)```", tour, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            substitution = re.search(r"\$\((.*)\)", line)
            words = shlex.split(substitution.group(1) if substitution else line, comments=True)
            if len(words) > 1 and words[0].endswith(program) and words[1] == first_arg:
                return words
    raise AssertionError(f"no `{program} {first_arg} ...` command in the README's tour")


async def test_the_readme_tour_works_as_written(tmp_path):
    swaks = require_tool("swaks")
    tour = readme_tour()
    ports = {"smtp": free_port(), "hits": free_port(), "admin": free_port()}
    env = defaults_env(ports)
    public = f"http://127.0.0.1:{ports['hits']}"
    relay = await serve(tmp_path, env, ports, 1)
    try:
        # 2. add yourself, in a second terminal, while the relay runs
        add = readme_command(tour, "trackrelay", "user")
        assert add[1:4] == ["user", "add", "you@example.com"], add
        cli(tmp_path, env, *add[1:], "--password-stdin", stdin=PASSWORD + "\n")
        policy = readme_command(tour, "trackrelay", "policy")
        assert policy[1:] == ["policy", "set", "you@example.com", "mode=always"], policy
        cli(tmp_path, env, *policy[1:])

        # 3. swaks exactly as written, only the port moved; it asks for the password
        command = readme_command(tour, "swaks", "--server")
        assert command[2] == "127.0.0.1:2525", command
        command = [swaks, command[1], f"127.0.0.1:{ports['smtp']}", *command[3:]]
        sent = await asyncio.to_thread(subprocess.run, command, input=PASSWORD + "\n", text=True,
                                       capture_output=True, timeout=60)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "queued as" in sent.stdout

        # 4. the copy the recipient got, kept by the capture upstream
        db = tmp_path / "var" / "trackrelay.db"
        rows: list = []

        def captured() -> bool:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                rows[:] = conn.execute("SELECT rcpt_tos, data FROM captured").fetchall()
            finally:
                conn.close()
            return bool(rows)

        await wait_until(captured)
        [(rcpt_tos, data)] = rows
        assert "friend@example.org" in rcpt_tos
        copy = copies_in(bytes(data))
        token = re.escape(copy.token)
        assert re.fullmatch(rf"{re.escape(public)}/o/[A-Za-z0-9_-]+\.gif", copy.pixel), copy.pixel
        assert len(copy.clicks) == 1 and re.fullmatch(rf"{re.escape(public)}/c/{token}/0", copy.clicks[0]), copy
        assert b"[track]" not in bytes(data)  # the subject tag was removed
        async with aiohttp.ClientSession() as http:
            async with http.get(copy.pixel) as resp:
                assert resp.status == 200 and resp.headers["Content-Type"] == "image/gif"
                await resp.read()
            async with http.get(copy.clicks[0], allow_redirects=False) as resp:
                assert resp.status == 302 and resp.headers["Location"] == "https://example.org/menu"

            # 5. the same data in the JSON API
            token_cmd = readme_command(tour, "trackrelay", "token")
            assert token_cmd[1:] == ["token", "create", "you@example.com"], token_cmd
            api_token = cli(tmp_path, env, *token_cmd[1:]).strip()
            assert "/api/v1/messages" in tour
            found: dict = {}

            async def counted() -> bool:
                async with http.get(f"http://127.0.0.1:{ports['admin']}/api/v1/messages",
                                    headers={"Authorization": f"Bearer {api_token}"}) as resp:
                    assert resp.status == 200
                    found.update(await resp.json())
                return bool(found["messages"]) and found["messages"][0]["clicks"] >= 1 \
                    and found["messages"][0]["opens"] >= 1

            await wait_until(counted)
            async with http.get(f"http://127.0.0.1:{ports['admin']}/api/v1/messages/{found['messages'][0]['id']}",
                                headers={"Authorization": f"Bearer {api_token}"}) as resp:
                events = (await resp.json())["events"]
        # README step 5: "your own view from the address you sent from is `self`"
        assert sorted((e["type"], e["class"]) for e in events) == [("click", "self"), ("open", "self")], events
        [message] = found["messages"]
        assert message["subject"] == "lunch?" and message["tracked"] == {"opens": True, "clicks": True}
        assert message["opens"] >= 1 and message["clicks"] >= 1
        assert message["recipients"][0]["address"] == "friend@example.org"
    finally:
        assert await stop(relay) == 0
