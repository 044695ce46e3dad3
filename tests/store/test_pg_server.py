"""The test PostgreSQL itself: a real server, a fresh migrated database per test."""
from __future__ import annotations

import asyncpg

from relay.store.pg_schema import MIGRATIONS


async def test_each_test_gets_a_fresh_database_on_a_real_server(pg_url, pg_server):
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT current_database()") == pg_url.rsplit("/", 1)[1]
        assert await conn.fetchval("SELECT max(version) FROM schema_version") == len(MIGRATIONS)  # migrated
        assert await conn.fetchval("SELECT count(*) FROM users") == 0
        assert str(pg_server.port) in pg_url and await conn.fetchval("SHOW server_version_num")
    finally:
        await conn.close()
