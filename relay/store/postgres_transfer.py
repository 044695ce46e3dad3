"""PostgreSQL side of trackrelay migrate-store: tables out and in as plain dicts, ids kept."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, AsyncContextManager, Sequence

import asyncpg

from relay.store.tables import KEYS, TABLES, known


class PgTransferMixin:
    """Mixed into PostgresStore. Table names come from tables.py only."""

    if TYPE_CHECKING:
        def _conn(self, *, transaction: bool = False) -> AsyncContextManager[asyncpg.Connection]: ...

    async def is_empty(self) -> bool:
        async with self._conn() as c:
            return await c.fetchval(
                "SELECT NOT EXISTS (SELECT 1 FROM users) AND NOT EXISTS (SELECT 1 FROM messages)")

    async def export_rows(self, table: str, after: tuple | None, limit: int) -> list[dict]:
        keys = KEYS[table]
        where = "" if after is None else (
            f" WHERE ({', '.join(keys)}) > ({', '.join(f'${i + 1}' for i in range(len(keys)))})")
        args = [*(after or ()), limit]
        async with self._conn() as c:
            rows = await c.fetch(f"SELECT * FROM {table}{where} ORDER BY {', '.join(keys)} LIMIT ${len(args)}", *args)
        return [dict(r) for r in rows]

    async def import_rows(self, table: str, rows: Sequence[dict]) -> None:
        if not rows:
            return
        known(table)
        columns = list(rows[0])
        async with self._conn(transaction=True) as c:
            flags = {r[0] for r in await c.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = $1 AND data_type = 'boolean'",
                table)}
            await c.executemany(
                f"INSERT INTO {table} ({', '.join(columns)})"
                f" VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))})",
                [tuple(_typed(r[k], k in flags) for k in columns) for r in rows])

    async def imported(self) -> None:
        """New ids continue after the copied ones."""
        async with self._conn(transaction=True) as c:
            for table, keys in TABLES:
                if keys == ("id",):
                    await c.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(max(id), 0) + 1, false)"
                        f" FROM {table}")


def _typed(value: Any, flag: bool) -> Any:
    """SQLite keeps booleans as 0/1."""
    return bool(value) if flag and value is not None else value
