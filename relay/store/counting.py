"""Adding up hit counts, the same for every engine (pure)."""
from __future__ import annotations

from typing import Any, Sequence

from relay.records import HitCounts


def counts_from_row(row: Sequence[Any] | None) -> HitCounts:
    """row: opens, human opens, clicks, human clicks, first open, last open."""
    if row is None:
        return HitCounts()
    return HitCounts(int(row[0]), int(row[1]), int(row[2]), int(row[3]), row[4], row[5])


def add_counts(a: HitCounts, b: HitCounts) -> HitCounts:
    firsts = [t for t in (a.first_open_at, b.first_open_at) if t is not None]
    lasts = [t for t in (a.last_open_at, b.last_open_at) if t is not None]
    return HitCounts(a.opens + b.opens, a.human_opens + b.human_opens, a.clicks + b.clicks,
                     a.human_clicks + b.human_clicks, min(firsts, default=None), max(lasts, default=None))
