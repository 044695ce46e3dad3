"""Delivery workers: claim spooled mail, rewrite each copy, send upstream, record the result.

A result per recipient (sent / deferred / bounced), never an exception for an expected
outcome. Bounces become a DSN from the null sender, spooled in the same transaction.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence
from urllib.parse import urlsplit

from relay.dkim import sign as dkim_sign
from relay.dsn import Failure, build_dsn
from relay.intake import new_queue_id
from relay.notice import copy_notice
from relay.rewrite import RewritePlan
from relay.rewrite_pool import RewritePool
from relay.credentials import Credentials
from relay.records import (ClaimedMessage, CopyRef, MessageOutcome, NewMessage, NewRecipient, PendingRecipient,
                           RecipientResult)
from relay.status import message_outcome
from relay.upstream import SendOutcome, Upstream

log = logging.getLogger(__name__)


class DeliveryStore(Protocol):
    """What delivery needs of the store: claims with a lease, and their results."""

    async def claim(self, worker: str, now: float, limit: int, lease: float) -> list[ClaimedMessage]: ...
    async def save_links(self, message_id: int, links: Sequence[tuple[int, str]]) -> None: ...
    # outcome: relay.status.message_outcome of the results and the claim's settled statuses
    async def finish(self, message_id: int, results: Sequence[RecipientResult], outcome: MessageOutcome, now: float,
                     rewrite_note: str | None = None, dsn: NewMessage | None = None) -> str: ...
    async def renew(self, worker: str, until: float) -> None: ...
    async def release(self, worker: str) -> None: ...
    async def lock_holders(self) -> set[str]: ...
_ENHANCED = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


@dataclass(frozen=True)
class DeliverySettings:
    retry_intervals: tuple[float, ...]
    max_age: float
    workers: int
    public_url: str
    hostname: str
    pixel_position: str = "bottom"
    passthrough: bool = False
    lease: float = 600.0
    poll: float = 1.0
    dkim_domain: str = ""
    dkim_selector: str = ""
    dkim_key: bytes = b""
    dkim_resign: bool = False
    # the notice tracked copies carry (relay/notice.py)
    disclosure_text: str = ""
    disclosure_html: str = ""
    optout_link: bool = False


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def rewrite_plan(copy: CopyRef, s: DeliverySettings) -> RewritePlan:
    base = s.public_url.rstrip("/")
    notice = copy_notice(disclosure_text=s.disclosure_text, disclosure_html=s.disclosure_html,
                         optout_url=f"{base}/p/{copy.token}" if s.optout_link else "",
                         relay=urlsplit(base).hostname or base)
    return RewritePlan(
        opens=copy.opens,
        clicks=copy.clicks,
        text_links=copy.text_links,
        pixel_url=f"{base}/o/{copy.token}.gif",
        click_base=f"{base}/c/{copy.token}/",
        own_prefix=base,
        pixel_position=s.pixel_position,
        allow_dkim_signed=s.dkim_resign and bool(s.dkim_key),
        token=copy.token,
        notice_text=notice.text,
        notice_html=notice.html,
    )


def judge(outcome: SendOutcome, rcpts: Sequence[PendingRecipient], *, received_at: float, now: float,
          s: DeliverySettings) -> list[RecipientResult]:
    """No I/O: the upstream's answer -> one result per recipient."""
    results = []
    for r in rcpts:
        code, text = outcome.refused.get(r.address, (outcome.code, outcome.text))
        if outcome.ok and r.address not in outcome.refused:
            results.append(RecipientResult(r.id, "sent", "250 sent"))
        elif 500 <= code < 600:
            results.append(RecipientResult(r.id, "bounced", f"{code} {text}".strip()))
        else:
            wait = s.retry_intervals[min(r.attempts, len(s.retry_intervals) - 1)]
            detail = f"{code} {text}".strip() if code else text
            if now - received_at >= s.max_age:
                results.append(RecipientResult(r.id, "bounced", f"4.4.7 delivery time expired; last error: {detail}"))
            else:
                results.append(RecipientResult(r.id, "deferred", detail, now + wait))
    return results


def enhanced_status(detail: str) -> str:
    m = _ENHANCED.search(detail)
    if m:
        return m.group(1)
    return "5.0.0" if detail[:1] == "5" else "4.4.7"


class DeliveryWorker:
    def __init__(self, store: DeliveryStore, upstream: Upstream, settings: DeliverySettings, *,
                 credentials: Credentials | None = None, clock: Callable[[], float] = time.time,
                 name: str | None = None, rewriter: RewritePool | None = None) -> None:
        self.store = store
        self.upstream = upstream
        self.s = settings
        self.credentials = credentials or Credentials()
        self.rewriter = rewriter or RewritePool(0)
        self.clock = clock
        self.name = name or worker_name()
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: set[asyncio.Task] = set()
        self._renewing: asyncio.Task | None = None
        self._claimed = asyncio.Event()  # clear while a claim is on its way to the store
        self._claimed.set()
        self.counts: dict[str, int] = defaultdict(int)

    def wake(self) -> None:
        self._wake.set()

    async def recover(self) -> None:
        """At start: take back claims of dead workers on this host, so the mail they had in flight
        is tried at once (its retry time has come). Deferred mail keeps its schedule: a restart,
        or one more delivery process, must not pull every deferred mail forward."""
        host = socket.gethostname()
        for holder in await self.store.lock_holders():
            holder_host, _, pid = holder.rpartition(":")
            if holder_host == host and pid.isdigit() and not _alive(int(pid)):
                log.info("releasing mail claimed by %s, which is gone", holder)
                await self.store.release(holder)

    async def run(self) -> None:
        await self.recover()
        self._renewing = asyncio.create_task(self._renew_leases())
        while not self._stopping:
            free = self.s.workers - len(self._tasks)
            claimed = []
            if free > 0:
                self._claimed.clear()
                try:
                    claimed = await self.store.claim(self.name, self.clock(), free, self.s.lease)
                except Exception:  # the store is down: keep trying, never die
                    log.exception("claim failed")
                finally:
                    self._claimed.set()
            for m in claimed:  # even when stopping: stop() waits for these too
                task = asyncio.create_task(self._deliver_safely(m))
                self._tasks.add(task)
                task.add_done_callback(self._done)
            if claimed and len(claimed) == free:
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.s.poll)
            except asyncio.TimeoutError:
                pass

    async def _renew_leases(self) -> None:
        """A delivery may outlast its lease (a slow upstream, a slow rewrite): while mail is in
        flight its lease is extended, three times a lease, so no other worker claims it too."""
        while True:
            await asyncio.sleep(self.s.lease / 3)
            if self._tasks:
                try:
                    await self.store.renew(self.name, self.clock() + self.s.lease)
                except Exception:  # the store is down: try again at the next turn
                    log.exception("lease renewal failed")

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._wake.set()

    async def stop(self, grace: float = 20.0) -> None:
        """Stop claiming; finish what is in flight (up to grace seconds), release the rest."""
        self._stopping = True
        self._wake.set()
        # a claim still on its way would start deliveries after the wait below, and they would
        # meet a closed store: let it land first
        await self._claimed.wait()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._renewing is not None:
            self._renewing.cancel()
        await self.store.release(self.name)

    async def _deliver_safely(self, m: ClaimedMessage) -> None:
        try:
            await self.deliver(m)
        except asyncio.CancelledError:
            raise
        except Exception:
            # a bug, not an outcome: defer the mail (retried later, never lost)
            log.exception("delivery of %s failed unexpectedly", m.queue_id)
            outcome = SendOutcome(False, 451, "4.3.0 internal error in the relay")
            try:
                await self._record(m, self._judge(m, outcome, m.recipients))
            except Exception:  # the store is down too: the claim lapses and the mail is retried
                log.exception("could not defer %s", m.queue_id)

    async def deliver(self, m: ClaimedMessage) -> str:
        # one upstream transaction per copy; untracked recipients (copy None) share the original
        groups: dict[CopyRef | None, list[PendingRecipient]] = defaultdict(list)
        for r in m.recipients:
            groups[r.copy].append(r)
        login = None
        if self.s.passthrough:
            login = self.credentials.get(m.user_id)
            if login is None:
                # the user's password lives in memory only: wait for their next login
                return await self._record(m, self._judge(
                    m, SendOutcome(False, 451, "4.7.0 waiting for the sender's SMTP login (passthrough)"), m.recipients))
        copies = [copy for copy in groups if copy is not None]
        rewritten = dict(zip(copies, await self.rewriter.rewrite_all(
            m.body, [rewrite_plan(copy, self.s) for copy in copies])))
        note = next((r.skipped for r in rewritten.values() if r.skipped), None)
        if note:
            log.info("%s: tracking skipped: %s", m.queue_id, note)
        if rewritten and not m.links_saved:
            # saved before the mail leaves, so the first click already finds its link
            first = next(iter(rewritten.values()))
            await self.store.save_links(m.id, [(link.position, link.url) for link in first.links])

        async def send(copy: CopyRef | None, rcpts: list[PendingRecipient]) -> list[RecipientResult]:
            data = m.body if copy is None else rewritten[copy].data
            # sign what we changed (the rewrite may come back from a worker as a new object),
            # and only a From the sender owns: else our d= would vouch for someone else's domain
            if self.s.dkim_key and data != m.body and m.from_owned:
                data = dkim_sign(data, domain=self.s.dkim_domain, selector=self.s.dkim_selector,
                                 private_key=self.s.dkim_key)
            outcome = await self.upstream.send(m.mail_from, [r.address for r in rcpts], data,
                                               message_id=m.id, login=login)
            return self._judge(m, outcome, rcpts)

        # the copies are independent transactions: sent side by side over pooled connections
        sent = await asyncio.gather(*(send(copy, rcpts) for copy, rcpts in groups.items()))
        return await self._record(m, [result for results in sent for result in results], note)

    def _judge(self, m: ClaimedMessage, outcome: SendOutcome,
               rcpts: Sequence[PendingRecipient]) -> list[RecipientResult]:
        return judge(outcome, rcpts, received_at=m.received_at, now=self.clock(), s=self.s)

    async def _record(self, m: ClaimedMessage, results: list[RecipientResult], note: str | None = None) -> str:
        now = self.clock()
        for r in results:
            self.counts[r.status] += 1
        # the outcome counts on one result per pending recipient: one missing would erase the body it waits for
        if sorted(r.recipient_id for r in results) != sorted(r.id for r in m.recipients):
            raise RuntimeError(f"{m.queue_id}: the results are not one per pending recipient")
        dsn = self._dsn_for(m, results, now)
        return await self.store.finish(m.id, results, message_outcome(m.settled, results, now), now, note, dsn=dsn)

    def _dsn_for(self, m: ClaimedMessage, results: list[RecipientResult], now: float) -> NewMessage | None:
        bounced = [r for r in results if r.status == "bounced"]
        if not bounced or not m.mail_from:  # null-sender mail never gets a DSN
            return None
        address = {r.id: r.address for r in m.recipients}
        failures = [Failure(address[r.recipient_id], enhanced_status(r.detail), r.detail) for r in bounced]
        data = build_dsn(reporting_mta=self.s.hostname, original_sender=m.mail_from, failures=failures,
                         original=m.body, queue_id=m.queue_id, arrival=m.received_at, now=now)
        return NewMessage(
            queue_id=new_queue_id(), user_id=m.user_id, mail_from="", message_id="",
            subject="Undelivered Mail Returned to Sender", body=data, received_at=now, client_ip="",
            recipients=(NewRecipient(m.mail_from, None),), is_dsn=True,
        )
