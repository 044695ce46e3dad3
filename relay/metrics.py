"""Process metrics in the Prometheus text format (version 0.0.4). No dependency needed.

Counters live here and are bumped by the part that sees the event; values owned by
other objects (queue depths, store totals) are read at scrape time through collectors.
Each process exposes its own numbers; Prometheus sums them across a scaled-out fleet.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Mapping, Union

Labels = tuple[str, ...]
Samples = Mapping[Labels, float]
CollectResult = Union[Samples, Awaitable[Samples]]


@dataclass
class Counter:
    name: str
    help: str
    labels: tuple[str, ...] = ()
    values: dict[Labels, float] = field(default_factory=dict)

    def inc(self, *label_values: str, n: float = 1) -> None:
        if len(label_values) != len(self.labels):
            raise ValueError(f"{self.name}: expected labels {self.labels}, got {label_values}")
        self.values[label_values] = self.values.get(label_values, 0) + n

    def get(self, *label_values: str) -> float:
        return self.values.get(label_values, 0)

    def total(self) -> float:
        return sum(self.values.values())


@dataclass
class Histogram:
    name: str
    help: str
    buckets: tuple[float, ...]  # upper bounds, ascending; +Inf is added
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.buckets) + 1)
        self.counts[next((i for i, b in enumerate(self.buckets) if value <= b), len(self.buckets))] += 1
        self.sum += value

    def lines(self) -> list[str]:
        counts = self.counts or [0] * (len(self.buckets) + 1)
        out = [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, n in zip([*map(_number, self.buckets), "+Inf"], counts):
            running += n
            out.append(f'{self.name}_bucket{{le="{bound}"}} {running}')
        return out + [f"{self.name}_sum {_number(self.sum)}", f"{self.name}_count {running}"]


@dataclass
class _Collector:
    name: str
    help: str
    kind: str
    labels: tuple[str, ...]
    collect: Callable[[], CollectResult]


class Metrics:
    """A registry: counters plus collectors evaluated when /metrics is scraped."""

    def __init__(self) -> None:
        self._counters: dict[str, Counter] = {}
        self._histograms: dict[str, Histogram] = {}
        self._collectors: list[_Collector] = []

    def counter(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Counter:
        """The counter of that name, created on first use (parts may ask for it twice)."""
        existing = self._counters.get(name)
        if existing is not None:
            return existing
        counter = Counter(name, help, labels)
        self._counters[name] = counter
        return counter

    def histogram(self, name: str, help: str, buckets: tuple[float, ...]) -> Histogram:
        """The histogram of that name, created on first use."""
        return self._histograms.setdefault(name, Histogram(name, help, buckets))

    def collector(self, name: str, help: str, collect: Callable[[], CollectResult], *,
                  kind: str = "gauge", labels: tuple[str, ...] = ()) -> None:
        """Register a value read at scrape time; collect may be a coroutine function."""
        self._collectors.append(_Collector(name, help, kind, labels, collect))

    async def families(self) -> list[tuple[str, str, list[tuple[dict[str, str], float]]]]:
        """(name, help, [(labels, value)]) of every counter and collector, for people to read
        (the panel's health page); histograms are left to /metrics."""
        out = [(c.name, c.help, [(dict(zip(c.labels, k)), v) for k, v in sorted(c.values.items())])
               for c in self._counters.values()]
        for col in self._collectors:
            result = col.collect()
            samples = await result if inspect.isawaitable(result) else result
            out.append((col.name, col.help, [(dict(zip(col.labels, k)), v) for k, v in sorted(samples.items())]))
        return out

    async def render(self) -> str:
        lines: list[str] = []
        for c in self._counters.values():
            _family(lines, c.name, c.help, "counter", c.labels, c.values)
        for h in self._histograms.values():
            lines += h.lines()
        for col in self._collectors:
            result = col.collect()
            samples = await result if inspect.isawaitable(result) else result
            _family(lines, col.name, col.help, col.kind, col.labels, samples)
        return "\n".join(lines) + "\n"


def _family(lines: list[str], name: str, help: str, kind: str, labels: tuple[str, ...],
            samples: Samples) -> None:
    lines.append(f"# HELP {name} {_escape_help(help)}")
    lines.append(f"# TYPE {name} {kind}")
    if not samples and not labels:
        lines.append(f"{name} 0")
    for values, number in sorted(samples.items()):
        if labels:
            pairs = ",".join(f'{k}="{_escape_label(v)}"' for k, v in zip(labels, values))
            lines.append(f"{name}{{{pairs}}} {_number(number)}")
        else:
            lines.append(f"{name} {_number(number)}")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
