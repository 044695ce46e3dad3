"""trackrelay migrate-store: copy one store into another, table by table, ids kept.

Engine-neutral: it only moves rows through the Store's export_rows/import_rows. The target
must be empty (a half-done copy is dropped and run again, never merged into).
"""
from __future__ import annotations

from typing import Callable

from relay.errors import ConfigError
from relay.store import Store
from relay.store.tables import TABLES

BATCH = 1000


async def copy_store(source: Store, target: Store, progress: Callable[[str, int], None]) -> dict[str, int]:
    """Every table of source into target; progress(table, rows so far). Returns rows per table."""
    if not await target.is_empty():
        raise ConfigError("--to", "the target store is not empty (it has users or messages)")
    copied: dict[str, int] = {}
    for table, keys in TABLES:
        copied[table] = 0
        after: tuple | None = None
        while rows := await source.export_rows(table, after, BATCH):
            await target.import_rows(table, rows)
            copied[table] += len(rows)
            progress(table, copied[table])
            after = tuple(rows[-1][k] for k in keys)
    await target.imported()
    return copied


def summary(copied: dict[str, int]) -> str:
    shown = ("users", "api_tokens", "policies", "do_not_track", "consent", "messages", "copies", "links", "events")
    label = {"links": "link lists"}  # one row per message since migration 9
    return "copied " + ", ".join(f"{copied.get(t, 0)} {label.get(t, t.replace('_', ' '))}" for t in shown)
