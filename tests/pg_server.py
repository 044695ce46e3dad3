"""A throwaway PostgreSQL for the tests: initdb + pg_ctl in a temp dir on a free loopback port.

One server per test session; each test that needs a database gets a fresh one, copied from a
migrated template (CREATE DATABASE ... TEMPLATE takes milliseconds, migrating takes longer).
PostgreSQL refuses to run as root, so under root the server runs as `nobody`.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SUPERUSER = "postgres"
RUN_AS = "nobody"


def find_bin_dir() -> Path | None:
    """Debian puts the server binaries under /usr/lib/postgresql/<version>/bin, off PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version, reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _version(pg_ctl: str) -> int:
    try:
        return int(Path(pg_ctl).parent.parent.name)
    except ValueError:
        return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="trackrelay-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.template_ready = False  # tests/conftest.py's pg_url migrates the template once

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, RUN_AS)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync")
        # fsync off: a test database need not survive a power cut, and it saves seconds
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -F -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self) -> str:
        log = self.root / "log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else ""

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin_dir / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", RUN_AS, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stderr.strip() or done.stdout.strip()}\n{self.log_tail()}")
