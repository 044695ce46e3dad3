"""relay.rewrite_pool: real worker processes over pipes, and what happens when one dies."""
from __future__ import annotations

import asyncio
import os
import secrets
import signal
from dataclasses import replace

from hits_helpers import wait_until
from relay.rewrite import RewritePlan, rewrite_copies
from relay.rewrite_pool import RewritePool

HTML = "<html><body>" + "".join(f'<p><a href="https://shop.example/{i}?a=1&amp;b=2">link {i}</a></p>\n'
                                for i in range(20)) + "</body></html>\n"
RAW = ("From: a@shop.example\r\nTo: b@example.org\r\nSubject: pool\r\nMIME-Version: 1.0\r\n"
       "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
       + HTML.replace("\n", "\r\n")).encode()
BASE = RewritePlan(opens=True, clicks=True, pixel_url="", click_base="", own_prefix="https://t.example")


def plans(n: int) -> list[RewritePlan]:
    tokens = [secrets.token_urlsafe(18) for _ in range(n)]
    return [replace(BASE, token=t, pixel_url=f"https://t.example/o/{t}.gif", click_base=f"https://t.example/c/{t}/")
            for t in tokens]


async def test_workers_answer_like_an_inline_rewrite_under_concurrent_calls() -> None:
    pool = RewritePool(2)
    try:
        calls = [plans(3) for _ in range(40)]
        answers = await asyncio.gather(*(pool.rewrite_all(RAW, p) for p in calls))
        assert answers == [rewrite_copies(RAW, p) for p in calls]
        assert all(len(a[0].links) == 20 and a[0].pixel for a in answers)
        assert len({w.proc.pid for w in pool._workers}) == 2 and os.getpid() not in {w.proc.pid for w in pool._workers}
    finally:
        await pool.close()


async def test_a_dead_worker_costs_no_mail_and_is_replaced() -> None:
    pool = RewritePool(1)
    try:
        first = plans(2)
        assert await pool.rewrite_all(RAW, first) == rewrite_copies(RAW, first)
        [worker] = pool._workers
        # killed with calls in flight, none answered (it is stopped before they are sent):
        # they are answered inline
        os.kill(worker.proc.pid, signal.SIGSTOP)
        calls = [plans(2) for _ in range(10)]
        pending = [asyncio.ensure_future(pool.rewrite_all(RAW, p)) for p in calls]
        await wait_until(lambda: len(worker.pending) == len(calls))
        os.kill(worker.proc.pid, signal.SIGKILL)
        assert await asyncio.gather(*pending) == [rewrite_copies(RAW, p) for p in calls]
        assert not worker.alive
        # the next call starts a new worker
        again = plans(2)
        assert await pool.rewrite_all(RAW, again) == rewrite_copies(RAW, again)
        [new_worker] = pool._workers
        assert new_worker.alive and new_worker.proc.pid != worker.proc.pid
    finally:
        await pool.close()


async def test_close_ends_the_worker_processes() -> None:
    pool = RewritePool(2)
    await asyncio.gather(*(pool.rewrite_all(RAW, plans(1)) for _ in range(4)))
    procs = [w.proc for w in pool._workers]
    await pool.close()
    assert [p.returncode for p in procs] == [0, 0]


async def test_no_processes_rewrites_inline() -> None:
    pool = RewritePool(0)
    p = plans(2)
    assert await pool.rewrite_all(RAW, p) == rewrite_copies(RAW, p)
    assert pool._workers == []


async def test_a_rewrite_past_the_deadline_goes_out_untracked_and_its_worker_is_replaced() -> None:
    pool = RewritePool(1, timeout=0.5)
    try:
        warm = plans(1)
        assert await pool.rewrite_all(RAW, warm) == rewrite_copies(RAW, warm)
        [worker] = pool._workers
        os.kill(worker.proc.pid, signal.SIGSTOP)  # a worker that takes forever, as a runaway rewrite would
        [result] = await pool.rewrite_all(RAW, plans(1))
        assert result.data == RAW and not result.links and not result.pixel
        assert result.skipped == "rewrite took longer than 0.5s"
        assert await worker.proc.wait() == -signal.SIGKILL
        again = plans(2)
        assert await pool.rewrite_all(RAW, again) == rewrite_copies(RAW, again)
        [new_worker] = pool._workers
        assert new_worker.proc.pid != worker.proc.pid
    finally:
        await pool.close()


async def test_inline_rewriting_refuses_a_message_it_could_not_finish_by_the_deadline() -> None:
    pool = RewritePool(0, timeout=0.001)
    [result] = await pool.rewrite_all(RAW * 2, plans(1))
    assert result.data == RAW * 2 and result.skipped.startswith("too large to rewrite on the event loop")
    small = RewritePool(0, timeout=1.0)
    p = plans(1)
    assert await small.rewrite_all(RAW, p) == rewrite_copies(RAW, p)
