"""A sliding-window rate limiter, in memory and per process.

Used for a user's sending rate, failed SMTP logins per client address, and panel login
attempts. It blunts abuse; it is not an account lockout.
"""
from __future__ import annotations

import asyncio
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
        return self.limit > 0 and self.count(key) >= self.limit

    def count(self, key: Hashable) -> int:
        """Events of `key` in the window now."""
        events = self._hits.get(key)
        return 0 if events is None else len(self._expire(events, self.clock()))

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


class FailureLimiter:
    """At most `limit` failed attempts per key in a sliding `window`, for attempts whose check
    is slow (a password hash). A failure is only known once its check ends, so checks in flight
    count too: a key never has more checks running than failures it may still have; further
    attempts wait for those to end, then go on or are refused. Parallel guesses thus cannot
    all be checked before the first failures are counted."""

    def __init__(self, limit: int, window: float, *, max_keys: int = 10000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = RateLimiter(limit, window, max_keys=max_keys, clock=clock)
        self._running: dict[Hashable, int] = {}
        self._ended = asyncio.Event()  # set (and replaced) whenever a check ends

    async def start(self, key: Hashable) -> bool:
        """Take a check slot for `key` (waiting for one if need be); False: at its limit.
        Every True is to be followed by `end`."""
        limit = self.failures.limit
        while limit > 0 and self.failures.count(key) + self._running.get(key, 0) >= limit:
            if self.failures.blocked(key):
                return False
            await self._ended.wait()
        self._running[key] = self._running.get(key, 0) + 1
        return True

    def end(self, key: Hashable, *, failed: bool) -> None:
        self._running[key] -= 1
        if not self._running[key]:
            del self._running[key]
        if failed:
            self.failures.add(key)
        self._ended.set()
        self._ended = asyncio.Event()
