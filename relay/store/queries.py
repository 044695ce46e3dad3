"""Queries both engines build alike: the message list (who, tracked or not, a search, a
page), a change to a user, and which mail retention purges.

Keyset paging: a page ends with a cursor (the last message's received_at and id) and the
next page starts below it, so page 1,000 costs what page 1 does (an OFFSET walks past
every row before it).
"""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, Callable

from relay.records import UserChanges
from relay.status import PENDING

Cursor = tuple[float, int]  # (received_at, id) of the last message on a page
PENDING_SQL = "(" + ", ".join(f"'{status}'" for status in PENDING) + ")"  # mail still waiting


def purgeable_sql(cutoff: str) -> str:
    """Retention's rule as a condition on messages m (cutoff: the engine's placeholder): mail
    no longer waiting, received before the cutoff, with no hit and no delivery since."""
    return (f"m.received_at < {cutoff} AND m.status NOT IN {PENDING_SQL}"
            f" AND NOT EXISTS (SELECT 1 FROM events e WHERE e.message_id = m.id AND e.at >= {cutoff})"
            f" AND NOT EXISTS (SELECT 1 FROM copies c WHERE c.message_id = m.id AND c.delivered_at >= {cutoff})")


def like_pattern(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, its own % and _ taken literally (escape \\)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def message_list_sql(mark: Callable[[int], str], *, user_id: int | None, tracked: bool | None,
                     before: Cursor | None, search: str, limit: int, offset: int,
                     like: str = "LIKE") -> tuple[str, list[Any]]:
    """SELECT of messages for a list page. mark(n) is the engine's n-th placeholder ("?n" or
    "$n": numbered, so a value may be used twice); like: "LIKE" (SQLite: case-insensitive for ASCII) or "ILIKE"."""
    where: list[str] = ["NOT is_dsn"]
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return mark(len(args))

    if user_id is not None:
        where.append(f"user_id = {arg(user_id)}")
    if tracked is not None:
        where.append(f"(track_opens OR track_clicks) = {arg(tracked)}")
    if before is not None:
        at, last = arg(before[0]), arg(before[1])
        where.append(f"(received_at < {at} OR (received_at = {at} AND id < {last}))")
    if search:
        pattern = arg(like_pattern(search))
        where.append(f"(subject {like} {pattern} ESCAPE '\\' OR EXISTS (SELECT 1 FROM recipients r"
                     f" WHERE r.message_id = messages.id AND r.address {like} {pattern} ESCAPE '\\'))")
    sql = (f"SELECT * FROM messages WHERE {' AND '.join(where)}"
           f" ORDER BY received_at DESC, id DESC LIMIT {arg(limit)} OFFSET {arg(offset)}")
    return sql, args


def user_changes_sql(changes: UserChanges, mark: Callable[[int], str]) -> tuple[str, list[Any]]:
    """The SET list of an UPDATE of users; ValueError when nothing changes."""
    columns = [(k, v) for k, v in asdict(changes).items() if v is not None]
    if not columns:
        raise ValueError("no change")
    return ", ".join(f"{k} = {mark(n)}" for n, (k, _) in enumerate(columns, start=1)), [v for _, v in columns]


def parse_cursor(text: str) -> Cursor:
    """The API's `before` value; ValueError when it is not one this server made."""
    at, sep, last = text.partition("_")
    if not sep or not (last.isascii() and last.isdigit()) or len(text) > 64:
        raise ValueError("before: not a cursor from this API")
    try:
        cursor = float(at), int(last)
    except ValueError:
        raise ValueError("before: not a cursor from this API") from None
    if not math.isfinite(cursor[0]):
        raise ValueError("before: not a cursor from this API")
    return cursor


def cursor_text(cursor: Cursor) -> str:
    return f"{cursor[0]!r}_{cursor[1]}"
