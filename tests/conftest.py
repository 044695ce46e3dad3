"""Real servers on port 0: an aiosmtpd sink as the upstream, the relay app in-process."""
from __future__ import annotations

import asyncio
import itertools
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator

import asyncpg
import pytest
import uvloop
from aiosmtpd.smtp import SMTP, Envelope, Session

from relay import config as config_mod
from trackrelay.app import App
from relay.auth import hash_password
from relay.store import Store, open_store
from relay.store.postgres import PostgresStore
from pg_server import PgServer, find_bin_dir

IN_CI = os.environ.get("CI", "").lower() == "true"
PASSWORD = "correct horse battery"
_HASH = hash_password(PASSWORD)


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable]:
    # `trackrelay serve` runs on uvloop (trackrelay/cli.py), so every async test does too
    return {"uvloop": uvloop.new_event_loop}


def require_tool(name: str) -> str:
    """A missing external tool skips locally and fails in CI."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if path is None:
        _missing(f"{name} is not installed (make test installs it)")
    return path


def _missing(message: str) -> None:
    pytest.fail(message) if IN_CI else pytest.skip(message)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One throwaway PostgreSQL per test session (tests/pg_server.py)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        _missing("PostgreSQL is not installed: no /usr/lib/postgresql/*/bin/pg_ctl (make test installs it)")
    server = PgServer(bin_dir)
    server.start()
    yield server
    server.stop()


_databases = itertools.count(1)
TEMPLATE = "trackrelay_template"
# on a test (or a module's pytestmark): run it on SQLite and on PostgreSQL
both_engines = pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
async def pg_url(pg_server: PgServer) -> AsyncIterator[str]:
    """The URL of a fresh database on the session's PostgreSQL, already migrated (a copy of a
    template migrated once per session); dropped after the test."""
    if not pg_server.template_ready:
        await _admin(pg_server, f"CREATE DATABASE {TEMPLATE}")
        template = PostgresStore(pg_server.url(TEMPLATE))
        await template.open()
        await template.close()
        pg_server.template_ready = True
    name = f"test_{os.getpid()}_{next(_databases)}"
    await _admin(pg_server, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    yield pg_server.url(name)
    await _admin(pg_server, f"DROP DATABASE {name} WITH (FORCE)")


async def _admin(server: PgServer, sql: str) -> None:
    conn = await asyncpg.connect(server.url())
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store the test runs on: SQLite in tmp_path, or with indirect parametrization
    ("postgresql") a fresh database on the test PostgreSQL."""
    if getattr(request, "param", "sqlite") == "postgresql":
        return request.getfixturevalue("pg_url")
    return f"sqlite:///{tmp_path}/relay.db"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


class Arrivals:
    """For recording handlers with `messages` and an `arrived` event: wait for n messages."""

    messages: list
    arrived: asyncio.Event

    async def wait_for(self, count: int, timeout: float = 15.0) -> list:
        async def enough() -> None:
            while len(self.messages) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(enough(), timeout)
        return self.messages


@dataclass
class Sink(Arrivals):
    """Upstream stand-in: records what it receives; `replies` scripts answers to DATA."""

    messages: list[Received] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    port: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.replies:
            return self.replies.pop(0)
        sender = "" if envelope.mail_from == "<>" else envelope.mail_from  # aiosmtpd spells the null sender <>
        self.messages.append(Received(sender, list(envelope.rcpt_tos), envelope.original_content))
        self.arrived.set()
        return "250 2.0.0 Ok: queued"


class SinkSMTP(SMTP):
    line_length_limit = 1 << 20  # the sink must not be the part that refuses long lines


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    recorder = Sink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SinkSMTP(recorder, data_size_limit=None, enable_SMTPUTF8=True, loop=loop), "127.0.0.1", 0)
    recorder.port = server.sockets[0].getsockname()[1]
    yield recorder
    server.close()


def make_config(tmp_path: Path, upstream: str = "capture:", **overrides: str) -> config_mod.Config:
    env = {
        "TRACKRELAY_SMTP_LISTEN": "127.0.0.1:0",
        "TRACKRELAY_SMTP_HOSTNAME": "relay.test",
        "TRACKRELAY_HTTP_LISTEN": "127.0.0.1:0",
        "TRACKRELAY_ADMIN_LISTEN": "127.0.0.1:0",
        "TRACKRELAY_STORE_URL": f"sqlite:///{tmp_path}/relay.db",
        "TRACKRELAY_UPSTREAM_URL": upstream,
        "TRACKRELAY_DELIVERY_RETRY_INTERVALS": "1s",
        "TRACKRELAY_UPSTREAM_TIMEOUT": "10",
    }
    env.update({f"TRACKRELAY_{k.upper()}": v for k, v in overrides.items()})
    return config_mod.load(None, env)


@pytest.fixture
async def start_app(tmp_path: Path, store_url: str) -> AsyncIterator[Callable]:
    """start_app(cfg=None, **App kwargs) -> a started App; every one is stopped after the test.
    Its default config (and relay_to's) uses store_url: parametrize that with both_engines."""
    apps: list[App] = []

    async def start(cfg: config_mod.Config | None = None, **kwargs) -> App:
        app = App(cfg or make_config(tmp_path, store_url=store_url), **kwargs)
        await app.start()
        apps.append(app)
        return app

    start.store_url = store_url  # type: ignore[attr-defined]
    yield start
    for app in reversed(apps):
        await app.stop()


async def relay_to(sink: Sink, start_app: Callable, tmp_path: Path, *, clock: Callable[[], float] | None = None,
                   **overrides: str) -> App:
    """The relay delivering to the sink, alice@example.com its user; overrides as for make_config."""
    kwargs = {"clock": clock} if clock else {}
    overrides.setdefault("store_url", start_app.store_url)
    app = await start_app(make_config(tmp_path, f"smtp://127.0.0.1:{sink.port}", **overrides), **kwargs)
    await add_user(app)
    return app


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """An opened store on store_url's engine."""
    s = open_store(store_url)
    await s.open()
    yield s
    await s.close()


async def add_user(app: App, email: str = "alice@example.com", *, admin: bool = False):
    return await app.store.add_user(email, _HASH, admin)
