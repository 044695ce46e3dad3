"""SQLite side of trackrelay migrate-store: tables out and in as plain dicts, ids kept."""
from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Sequence

from relay.store.tables import KEYS, known

if TYPE_CHECKING:
    from relay.store.sqlite_runner import SqliteRunner


class TransferMixin:
    """Mixed into SqliteStore; uses its self._runner. Table names come from tables.py only."""

    _runner: SqliteRunner

    async def is_empty(self) -> bool:
        return await self._runner.read(
            lambda c: c.execute("SELECT NOT EXISTS (SELECT 1 FROM users) AND NOT EXISTS (SELECT 1 FROM messages)"
                                ).fetchone()[0] == 1)

    async def export_rows(self, table: str, after: tuple | None, limit: int) -> list[dict]:
        keys = ", ".join(KEYS[table])
        where = "" if after is None else f" WHERE ({keys}) > ({', '.join('?' * len(after))})"
        return await self._runner.read(lambda c: [dict(r) for r in c.execute(
            f"SELECT * FROM {table}{where} ORDER BY {keys} LIMIT ?", (*(after or ()), limit))])

    async def import_rows(self, table: str, rows: Sequence[dict]) -> None:
        if not rows:
            return
        columns = list(rows[0])
        known(table)
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

        def job(c: sqlite3.Connection) -> None:
            c.executemany(sql, [tuple(r[k] for k in columns) for r in rows])

        await self._runner.write(job)

    async def imported(self) -> None:
        """SQLite's integer keys continue after the largest id by themselves."""
