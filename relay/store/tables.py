"""The tables a store holds, in an order where every row's references come first, each with
the key it is paged by. trackrelay migrate-store copies them in this order, ids and all."""
from __future__ import annotations

TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("users", ("id",)),
    ("api_tokens", ("id",)),
    ("policies", ("user_id",)),
    ("sender_ips", ("user_id", "ip")),
    ("do_not_track", ("entry",)),
    ("consent", ("address",)),
    ("messages", ("id",)),
    ("bodies", ("message_id",)),
    ("copies", ("id",)),
    ("recipients", ("id",)),
    ("links", ("message_id",)),
    ("events", ("id",)),
    ("notifications", ("id",)),
    ("captured", ("id",)),
    ("webhooks", ("id",)),
    ("webhook_deliveries", ("webhook_id", "id")),  # a text id: no sequence to move on
    ("webhook_attempts", ("id",)),
    ("retired_tokens", ("token",)),
    ("retired_links", ("queue_id", "position")),
    # panel sessions are not copied: after a move, users log in again
)
KEYS = dict(TABLES)
# columns holding a list (PostgreSQL: an array; SQLite: JSON text): rows cross engines with the list
LISTS = {"links": ("urls",)}


def known(table: str) -> str:
    """The table name, checked: names are put into SQL, so only these may pass."""
    if table not in KEYS:
        raise ValueError(f"not a store table: {table!r}")
    return table

# privacy list kind -> (table, column); names come from here only, never from input
PRIVACY_TABLES = {"dnt": ("do_not_track", "entry"), "consent": ("consent", "address")}
