"""The message page's timeline (pure): each recipient's opens and clicks placed on one time
axis, drawn by the template as an SVG with no script and no inline style (the panel's CSP)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from relay.records import EventReport

WIDTH = 600  # the SVG's user units; it scales to the page
LANE = 28
LEFT = 8


@dataclass(frozen=True)
class Mark:
    x: float
    type: str  # "open" | "click": a circle or a diamond
    cls: str
    at: float


@dataclass(frozen=True)
class Lane:
    label: str  # the recipient, or "" for a copy several recipients shared
    y: float
    marks: tuple[Mark, ...]


@dataclass(frozen=True)
class Timeline:
    start: float
    end: float
    lanes: tuple[Lane, ...]
    height: float


def timeline(events: Sequence[EventReport], sent_at: float) -> Timeline | None:
    """None when there is nothing to draw. The axis runs from sending to the last event."""
    if not events:
        return None
    start = min(sent_at, *(e.at for e in events))
    end = max(e.at for e in events)
    span = max(end - start, 1.0)
    recipients: dict[str, list[Mark]] = {}
    for e in events:
        x = LEFT + (e.at - start) / span * (WIDTH - 2 * LEFT)
        recipients.setdefault(e.recipient or "", []).append(Mark(round(x, 1), e.type, e.cls, e.at))
    lanes = tuple(Lane(label, LANE * n + LANE / 2, tuple(marks))
                  for n, (label, marks) in enumerate(sorted(recipients.items())))
    return Timeline(start, end, lanes, LANE * len(lanes))
