"""Store contract for upgrades: a store an older release wrote opens migrated, its data intact."""
from __future__ import annotations

import itertools
import os
import re
import sqlite3
from contextlib import closing
from typing import Any, AsyncIterator

import asyncpg
import pytest

from relay.records import NewCopy, NewEvent
from relay.store import Store, open_store
from relay.store import postgres, sqlite
from tests.store.test_queue import T0, message

_databases = itertools.count(1)


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_url(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[str]:
    """A store no release has opened yet (conftest's pg_url is migrated already)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/relay.db"
        return
    server = request.getfixturevalue("pg_server")
    name = f"unmigrated_{os.getpid()}_{next(_databases)}"
    await _on_server(server.url(), f"CREATE DATABASE {name}")
    yield server.url(name)
    await _on_server(server.url(), f"DROP DATABASE {name} WITH (FORCE)")


async def _on_server(url: str, sql: str, *args: Any) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def execute(url: str, sql: str, *args: Any) -> None:
    """One statement written for PostgreSQL ($1...), on either engine, outside the store's code."""
    if url.startswith("sqlite:///"):
        with closing(sqlite3.connect(url[len("sqlite:///"):])) as conn, conn:
            conn.execute(re.sub(r"\$(\d+)", r"?\1", sql), args)
    else:
        await _on_server(url, sql, *args)


async def opened_at(url: str, version: int, monkeypatch: pytest.MonkeyPatch) -> Store:
    """The store as the release whose last migration was `version` left it."""
    with monkeypatch.context() as m:
        m.setattr(sqlite, "MIGRATIONS", sqlite.MIGRATIONS[:version])
        m.setattr(postgres, "MIGRATIONS", postgres.MIGRATIONS[:version])
        store = open_store(url)
        await store.open()
    return store


async def test_version_8_link_rows_become_one_list_per_message_with_their_gaps(empty_url, monkeypatch):
    old = await opened_at(empty_url, 8, monkeypatch)
    alice = await old.add_user("alice@example.com", "h")
    ids = [await old.spool(message(q, alice.id, copies=[NewCopy(f"tok-{q}", "bob@example.org", True, True)]))
           for q in ("GAP", "NONE", "UNSAVED")]
    await old.close()
    gap, no_links, _ = ids
    for position, url in [(0, "https://example.com/a"), (2, "https://example.com/c"), (3, "https://example.com/d")]:
        await execute(empty_url, "INSERT INTO links (message_id, position, url) VALUES ($1, $2, $3)", gap, position, url)
    await execute(empty_url, "UPDATE messages SET links_saved = TRUE WHERE id IN ($1, $2)", gap, no_links)

    store = open_store(empty_url)
    await store.open()
    try:
        target = await store.copy_target("tok-GAP")
        # position 1 had no link: the others keep theirs, which the sent mail's click URLs carry
        assert target.links == {0: "https://example.com/a", 2: "https://example.com/c", 3: "https://example.com/d"}
        assert (await store.copy_target("tok-NONE")).links == {}
        assert {m.queue_id: m.links_saved for m in await store.claim("w", T0, 10, 60)} == {
            "GAP": True, "NONE": True, "UNSAVED": False}
        await store.record_hits([NewEvent(target.copy_id, gap, "click", T0 + 5, 3, "203.0.113.0", "UA", "human")])
        report = await store.message_report(gap, None)
        assert [(x.position, x.url, x.clicks) for x in report.links] == [
            (0, "https://example.com/a", 0), (2, "https://example.com/c", 0), (3, "https://example.com/d", 1)]
        assert [(e.type, e.url) for e in report.events] == [("open", None), ("click", "https://example.com/d")]
    finally:
        await store.close()
