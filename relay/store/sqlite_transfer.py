"""SQLite side of trackrelay migrate-store: tables out and in as plain dicts, ids kept."""
from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any, Callable, Sequence

from relay.store.link_lists import from_json, to_json
from relay.store.tables import KEYS, LISTS, known

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
        return await self._runner.read(lambda c: [_listed(table, dict(r), from_json) for r in c.execute(
            f"SELECT * FROM {table}{where} ORDER BY {keys} LIMIT ?", (*(after or ()), limit))])

    async def import_rows(self, table: str, rows: Sequence[dict]) -> None:
        if not rows:
            return
        columns = list(rows[0])
        known(table)
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        values = [tuple(r[k] for k in columns) for r in [_listed(table, row, to_json) for row in rows]]

        def job(c: sqlite3.Connection) -> None:
            c.executemany(sql, values)

        await self._runner.write(job)

    async def imported(self) -> None:
        """SQLite's integer keys continue after the largest id by themselves."""


def _listed(table: str, row: dict, convert: Callable[[Any], Any]) -> dict:
    """The row with its list columns (tables.LISTS) converted to or from SQLite's JSON text."""
    return {**row, **{k: convert(row[k]) for k in LISTS.get(table, ())}}
