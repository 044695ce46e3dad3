"""From an HTTP hit to a classified event in the recorder's queue.

Everything the classifier needs (the copy behind a token, the sender's recent IPs, the
copy's recent clicks) is kept in small in-memory caches, so a hit on a warm token is
classified and queued without a single await. Cold look-ups run in background tasks,
off the response path; ``close()`` waits for them so no hit is lost at shutdown.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Awaitable, Callable, Generic, Hashable, Protocol, TypeVar

from relay.classify import Hit, HitContext, Rules, classify, load_rules
from relay.errors import StoreUnavailable
from relay.hit_recorder import HitRecorder
from relay.metrics import Metrics
from relay.netaddr import anonymize_ip
from relay.records import CopyTarget, NewEvent

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
SENDER_IP_DAYS = 30  # DESIGN: "self" = an address the sender used in the last 30 days
_MISSING = object()
UNKNOWN = object()  # cached_link(): not in the cache


class HitStore(Protocol):
    async def copy_target(self, token: str) -> CopyTarget | None: ...
    async def recent_sender_ips(self, user_id: int, since: float) -> frozenset[str]: ...
    async def retired_link(self, token: str, position: int) -> str | None: ...


@dataclass(frozen=True)
class TrackerSettings:
    anonymize_ip: bool = True
    machine_window: float = 10.0
    target_cache_size: int = 50000
    target_ttl: float = 300.0  # an erased copy stops resolving within this time
    unknown_ttl: float = 30.0
    sender_ip_ttl: float = 30.0
    history_copies: int = 10000
    history_seconds: float = 60.0
    lookup_deadline: float = 60.0  # a store outage longer than this drops (and counts) pixel hits
    max_pending: int = 10000  # hits parked for cold look-ups; beyond this a flood is shed, counted


@dataclass(frozen=True)
class RawHit:
    """What the HTTP layer saw; ``at`` is taken when the request arrived."""

    kind: str  # "open" | "click"
    method: str
    ip: str
    user_agent: str
    purpose: str
    at: float
    position: int | None = None


@dataclass(frozen=True)
class _Waiting:
    raw: RawHit
    target: CopyTarget | None  # known for clicks (the redirect needed it)
    history: tuple[tuple[float, int], ...]


class TtlCache(Generic[K, V]):
    """An LRU map whose entries also expire; expiry uses the monotonic clock."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size, self.ttl = size, ttl
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K, default: object = _MISSING) -> V | object:
        item = self._data.get(key)
        if item is None:
            return default
        if item[0] < time.monotonic():
            del self._data[key]
            return default
        self._data.move_to_end(key)
        return item[1]

    def peek(self, key: K) -> tuple[V, bool] | None:
        """(value, still fresh) even after expiry, for serve-stale-while-refreshing."""
        item = self._data.get(key)
        if item is None:
            return None
        self._data.move_to_end(key)
        return item[1], item[0] >= time.monotonic()

    def put(self, key: K, value: V, ttl: float | None = None) -> None:
        self._data[key] = (time.monotonic() + (self.ttl if ttl is None else ttl), value)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def discard(self, key: K) -> None:
        self._data.pop(key, None)


class HitTracker:
    def __init__(self, store: HitStore, recorder: HitRecorder, metrics: Metrics,
                 settings: TrackerSettings = TrackerSettings(), *, clock: Callable[[], float] = time.time,
                 rules: Rules | None = None) -> None:
        self.store = store
        self.recorder = recorder
        self.s = settings
        self.clock = clock
        self.rules = rules if rules is not None else load_rules()
        self._targets: TtlCache[str, CopyTarget | None] = TtlCache(settings.target_cache_size, settings.target_ttl)
        # links of mail purged by retention: (token, position) -> URL, None when not one either
        self._retired: TtlCache[tuple[str, int], str | None] = TtlCache(settings.target_cache_size, settings.target_ttl)
        self._lookups: dict[Hashable, asyncio.Future] = {}
        self._sender_ips: TtlCache[int, frozenset[str]] = TtlCache(10000, settings.sender_ip_ttl)
        self._clicks: OrderedDict[int, dict[int, float]] = OrderedDict()  # copy -> position -> last click
        # copies a person was seen opening: their later opens notify no one, so they need not hurry
        self._read: TtlCache[int, bool] = TtlCache(settings.target_cache_size, 3600.0)
        self._waiting: dict[str, list[_Waiting]] = {}  # token -> hits parked until its look-ups end
        self._parked = 0
        self._tasks: set[asyncio.Future] = set()  # one per token in _waiting
        self._refreshes: set[asyncio.Future] = set()
        self.hits = metrics.counter("trackrelay_hits_total", "Hits on known tokens by kind and class",
                                    ("kind", "class"))
        self.unknown = metrics.counter("trackrelay_hits_unknown_total", "Hits on unknown or malformed tokens (kind retired: clicks in mail purged by retention)",
                                       ("kind",))
        self.dropped = recorder.dropped

    @property
    def parked(self) -> int:
        """Hits waiting for their token's look-ups before they are classified and queued."""
        return self._parked

    # token -> copy

    async def target(self, token: str) -> CopyTarget | None:
        """The copy behind a token (cache, then store). Raises StoreUnavailable."""
        cached = self._targets.get(token)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        return await self._once(("copy", token), lambda: self._load(token))

    async def _once(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        """One store read per key, however many requests wait for it at the same time."""
        pending = self._lookups.get(key)
        if pending is None:
            pending = asyncio.ensure_future(load())
            self._lookups[key] = pending
            pending.add_done_callback(lambda _f: self._lookups.pop(key, None))
        return await asyncio.shield(pending)

    async def _load(self, token: str) -> CopyTarget | None:
        found = await self.store.copy_target(token)
        if found is None:
            self._targets.put(token, None, self.s.unknown_ttl)
        elif found.delivered_at is not None:  # before delivery the copy is still changing
            self._targets.put(token, found)
        return found

    def cached_link(self, token: str, position: int) -> tuple[CopyTarget, str] | None | object:
        """link() from the cache alone, without a wait: UNKNOWN when the store must be asked."""
        target = self._targets.get(token)
        if target is None:
            return None
        if not isinstance(target, CopyTarget) or position not in target.links:  # not cached, or before its links
            return UNKNOWN
        return target, target.links[position]

    async def link(self, token: str, position: int) -> tuple[CopyTarget, str] | None:
        """(copy, stored URL) for a click, or None for an unknown token or position."""
        found = self.cached_link(token, position)
        if found is not UNKNOWN:
            return found  # type: ignore[return-value]
        self._targets.discard(token)  # not cached, or cached before its links were saved: ask the store
        target = await self.target(token)
        if target is None or position not in target.links:
            return None
        return target, target.links[position]

    def cached_destination(self, token: str, position: int) -> tuple[CopyTarget | None, str] | None | object:
        """Where a click goes, from the caches alone (UNKNOWN: ask the store): (copy, URL),
        (None, URL) for a link in mail purged by retention (it redirects, recording nothing),
        or None for an unknown token or position."""
        found = self.cached_link(token, position)
        if found is not None:
            return found
        url = self._retired.get((token, position))
        if url is _MISSING:
            return UNKNOWN
        return None if url is None else (None, url)

    async def destination(self, token: str, position: int) -> tuple[CopyTarget | None, str] | None:
        """cached_destination() with the store asked. Raises StoreUnavailable."""
        found = await self.link(token, position)
        if found is not None:
            return found
        url = await self._once(("retired", token, position), lambda: self._load_retired(token, position))
        return None if url is None else (None, url)

    async def _load_retired(self, token: str, position: int) -> str | None:
        url = await self.store.retired_link(token, position)
        self._retired.put((token, position), url, None if url else self.s.unknown_ttl)
        return url

    # recording

    def observe_open(self, token: str, raw: RawHit) -> None:
        """Record a pixel hit; returns at once (the look-up, if any, runs in the background)."""
        if token not in self._waiting:
            target = self._targets.get(token)
            if target is None:
                self.unknown.inc(raw.kind)
                return
            if target is not _MISSING and self._try_now(target, raw, ()):  # type: ignore[arg-type]
                return
        self._wait(token, _Waiting(raw, None, ()))

    def observe_click(self, token: str, target: CopyTarget, raw: RawHit) -> None:
        history = self._click_history(target.copy_id, raw)
        if token in self._waiting or not self._try_now(target, raw, history):
            self._wait(token, _Waiting(raw, target, history))

    def _wait(self, token: str, item: _Waiting) -> None:
        """Park a hit until its token's look-ups are done. Later hits on the same token join
        the same list, so a copy's hits reach the store in arrival order (implied opens and
        "first human open" notifications depend on it); one task per token drains it."""
        if self._parked >= self.s.max_pending:
            self.dropped.inc("overload")
            return
        self._parked += 1
        items = self._waiting.get(token)
        if items is not None:
            items.append(item)
            return
        self._waiting[token] = [item]
        task = asyncio.ensure_future(self._drain(token))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _click_history(self, copy_id: int, raw: RawHit) -> tuple[tuple[float, int], ...]:
        """This copy's earlier recent clicks, the latest per link position (a burst is clicks
        on several links, so one entry per link is all the classifier needs), then this one
        added."""
        recent = self._clicks.pop(copy_id, None) or {}
        cutoff = raw.at - self.s.history_seconds
        before = tuple((at, pos) for pos, at in recent.items() if at >= cutoff)
        recent[raw.position if raw.position is not None else -1] = raw.at
        self._clicks[copy_id] = recent
        while len(self._clicks) > self.s.history_copies:
            self._clicks.popitem(last=False)
        return before

    def _try_now(self, target: CopyTarget, raw: RawHit, history: tuple[tuple[float, int], ...]) -> bool:
        senders: frozenset[str] = frozenset()
        if target.user_id is not None:
            known = self._sender_ips.peek(target.user_id)
            if known is None:
                return False
            senders, fresh = known
            if not fresh and ("senders", target.user_id) not in self._lookups:
                # this hit gets the older list; later ones the refreshed one
                task = asyncio.ensure_future(self._refresh_senders(target.user_id))
                self._refreshes.add(task)
                task.add_done_callback(self._refreshes.discard)
        self._submit(target, raw, senders, history)
        return True

    async def _refresh_senders(self, user_id: int) -> None:
        try:
            await self._once(("senders", user_id), lambda: self._load_senders(user_id))
        except StoreUnavailable as e:
            log.warning("sender addresses not refreshed: %s", e)

    async def _drain(self, token: str) -> None:
        items = self._waiting[token]
        delay, deadline = 0.05, time.monotonic() + self.s.lookup_deadline
        target: CopyTarget | None = next((i.target for i in items if i.target is not None), None)
        senders: frozenset[str] = frozenset()
        problem = ""
        while True:
            try:
                if target is None:
                    target = await self.target(token)
                if target is not None:
                    senders = await self._senders(target.user_id)
                break
            except StoreUnavailable as e:
                if time.monotonic() > deadline:
                    log.error("hits dropped, store unavailable for %.0fs: %s", self.s.lookup_deadline, e)
                    problem = "lookup_failed"
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except Exception:  # a bug must not vanish silently nor go uncounted
                log.exception("hits dropped: recording failed")
                problem = "error"
                break
        # from here on no await: every hit parked for this token is handled in one go, in order
        items = self._waiting.pop(token)
        self._parked -= len(items)
        for item in items:
            if problem:
                self.dropped.inc(problem)
            elif target is None:
                self.unknown.inc(item.raw.kind)
            else:
                self._submit(item.target or target, item.raw, senders, item.history)

    async def _senders(self, user_id: int | None) -> frozenset[str]:
        if user_id is None:
            return frozenset()
        known = self._sender_ips.peek(user_id)
        if known is not None:
            return known[0]
        return await self._once(("senders", user_id), lambda: self._load_senders(user_id))

    async def _load_senders(self, user_id: int) -> frozenset[str]:
        ips = await self.store.recent_sender_ips(user_id, self.clock() - SENDER_IP_DAYS * 86400)
        self._sender_ips.put(user_id, ips)
        return ips

    def _submit(self, target: CopyTarget, raw: RawHit, senders: frozenset[str],
                history: tuple[tuple[float, int], ...]) -> None:
        hit = Hit(kind=raw.kind, method=raw.method, ip=raw.ip, user_agent=raw.user_agent, purpose=raw.purpose,
                  at=_utc(raw.at), position=raw.position)
        ctx = HitContext(
            delivered_at=None if target.delivered_at is None else _utc(target.delivered_at),
            sender_ips=senders,
            recent_clicks=tuple((_utc(at), pos) for at, pos in history),
            machine_window=timedelta(seconds=self.s.machine_window),
        )
        try:
            cls = classify(hit, ctx, self.rules)
        except Exception:  # a classifier bug must not break the pixel, nor lose the hit uncounted
            # the kind and method only: the whole hit carries the reader's full IP (not for logs)
            log.exception("hit dropped: classification failed for a %s %s", raw.method, raw.kind)
            self.dropped.inc("error")
            return
        self.hits.inc(raw.kind, cls)
        # classified on the full address; only the truncated one is kept
        ip = anonymize_ip(raw.ip) if self.s.anonymize_ip else raw.ip
        urgent = cls == "human" and (raw.kind == "click" or self._read.get(target.copy_id) is _MISSING)
        if urgent and raw.kind == "open":
            self._read.put(target.copy_id, True)
        self.recorder.submit(NewEvent(target.copy_id, target.message_id, raw.kind, raw.at, raw.position, ip,
                                      raw.user_agent, cls), urgent=urgent)

    async def close(self, timeout: float = 30.0) -> None:
        """Wait for background look-ups, so their hits reach the recorder before it closes."""
        for task in self._refreshes:
            task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._parked:
            self.dropped.inc("shutdown", n=self._parked)
            self._waiting.clear()
            self._parked = 0


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)
