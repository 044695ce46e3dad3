"""Shared settings for the fuzz targets under tests/fuzz/.

`make test` runs each target briefly; `make fuzz` runs them for minutes by raising
TRACKRELAY_FUZZ_EXAMPLES. Targets take their settings from here, never their own count.
"""
from __future__ import annotations

import os
import time
from typing import Callable

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("TRACKRELAY_FUZZ_EXAMPLES", "150"))

fuzz = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


def cpu_seconds(run: Callable[[], object], repeat: int = 3) -> float:
    """The least CPU time of a few runs: the one least disturbed by the rest of the machine."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best


def assert_linear(make_input: Callable[[int], object], work: Callable[[object], object],
                  small: int = 2_000, factor: int = 16, slack: float = 4.0) -> None:
    """`work` on an input `factor` times larger costs at most `slack` * `factor` times more.

    Quadratic work costs `factor` times more again (16x input: 256x time), far past the
    slack, while a busy machine moves linear work by a small constant, well inside it.
    """
    little, big = make_input(small), make_input(small * factor)
    base = max(cpu_seconds(lambda: work(little)), 2e-4)  # below the clock's useful resolution
    grown = cpu_seconds(lambda: work(big), repeat=2)
    assert grown <= base * factor * slack, (
        f"{factor}x the input cost {grown / base:.0f}x the time ({base * 1e3:.2f} ms -> {grown * 1e3:.1f} ms)")
