"""A message's links as the store keeps them, one row per message (no I/O): a list whose
element i is the URL of position i, None where there is none (a gap, or a link erased).

One row instead of one per link: saving a mail's twenty links as rows (a foreign-key check
each, and a flag set on the message) cost a PostgreSQL backend 320-360 us of CPU, as one
row 100-115 us. PostgreSQL keeps the list as TEXT[], SQLite as a JSON array in TEXT.
"""
from __future__ import annotations

import json
from typing import Sequence

URLs = Sequence[str | None]


def url_list(links: Sequence[tuple[int, str]]) -> list[str | None]:
    """(position, url) pairs as the list; positions are kept, a missing one is None."""
    urls: list[str | None] = [None] * (max((pos for pos, _ in links), default=-1) + 1)
    for pos, url in links:
        urls[pos] = url
    return urls


def by_position(urls: URLs | None) -> dict[int, str]:
    """The list (None: no row) as position -> url, without the gaps."""
    return {pos: url for pos, url in enumerate(urls or ()) if url is not None}


def to_json(urls: URLs) -> str:
    return json.dumps(list(urls), ensure_ascii=False, separators=(",", ":"))


def from_json(text: str | None) -> list[str | None] | None:
    return None if text is None else json.loads(text)
