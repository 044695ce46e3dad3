"""A sliding-window rate limiter, in memory and per process.

Used for a user's sending rate, failed SMTP logins per client address, and panel login
attempts. It blunts abuse; it is not an account lockout.
"""
from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Callable, Hashable


class RateLimiter:
    """At most `limit` events per key in a sliding `window` of seconds (limit 0: no limit).
    Memory is bounded by `max_keys`: the least recently used keys are forgotten first."""

    def __init__(self, limit: int, window: float, *, max_keys: int = 10000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.max_keys, self.clock = limit, window, max_keys, clock
        self._hits: OrderedDict[Hashable, deque[float]] = OrderedDict()

    def blocked(self, key: Hashable) -> bool:
        """Whether `key` is at its limit now (counts nothing, remembers nothing new)."""
        events = self._hits.get(key)
        return self.limit > 0 and events is not None and len(self._expire(events, self.clock())) >= self.limit

    def add(self, key: Hashable) -> None:
        """Count one event against `key` (without a limit there is nothing to count)."""
        if self.limit <= 0:
            return
        now = self.clock()
        events = self._hits.setdefault(key, deque())
        self._hits.move_to_end(key)
        self._expire(events, now).append(now)
        while len(self._hits) > self.max_keys:
            self._hits.popitem(last=False)

    def take_back(self, key: Hashable) -> None:
        """Uncount the latest event of `key` (a reserved attempt that turned out fine)."""
        events = self._hits.get(key)
        if events:
            events.pop()

    def allow(self, *keys: Hashable) -> bool:
        """Count one attempt against every key that has room; False when any is at its limit."""
        allowed = True
        for key in keys:
            if self.blocked(key):
                allowed = False
            else:
                self.add(key)
        return allowed

    def _expire(self, events: deque[float], now: float) -> deque[float]:
        while events and now - events[0] >= self.window:
            events.popleft()
        return events
