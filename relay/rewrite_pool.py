"""Rewriting off the event loop: worker processes, so SMTP intake keeps a core to itself.

One call per message rewrites all its copies: one round trip, and one rewrite whose
result is stamped with each copy's token (rewrite.rewrite_copies). The event loop
talks to each worker over its stdin and stdout pipes, with no helper threads: a
concurrent.futures process pool needs two threads per call and the GIL for each,
which cost more than the rewrite itself under load (3 ms a call when idle, 25-40 ms
under SMTP load, for 1 ms of work). A worker answers its calls in order.

With processes = 0 it rewrites inline, on the loop. A worker that dies fails its
pending calls over to inline rewriting, and the next call starts a new one.

Every call has a deadline (DESIGN invariant 9): past it the mail goes out untracked,
and the worker, stuck in that rewrite, is killed and replaced. Work on the loop cannot
be stopped, so there the rewriters' linear time is the bound: a message too large to be
rewritten by the deadline at the slowest rate measured is not rewritten inline.
"""
from __future__ import annotations

import asyncio
import logging
import pickle
import sys
from collections import deque
from typing import Sequence

from relay.rewrite import RewritePlan, RewriteResult, rewrite_copies

log = logging.getLogger(__name__)
HEADER = 8  # every frame: its length as 8 bytes, big-endian, then a pickle
# The slowest the rewriters go, on adversarial markup (runs of VML links), with room to spare.
SLOWEST_BYTES_PER_SECOND = 2_000_000


def frame(obj: object) -> bytes:
    """obj as one frame of the pipe protocol (both directions)."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(HEADER, "big") + data


class WorkerGone(Exception):
    """The worker process ended before answering."""


def untracked(raw: bytes, plans: Sequence[RewritePlan], reason: str) -> list[RewriteResult]:
    """Each copy as it came, with the reason it is not tracked."""
    return [RewriteResult(raw, (), False, reason) for _ in plans]


class RewritePool:
    def __init__(self, processes: int, timeout: float = 5.0) -> None:
        self.processes = processes
        self.timeout = timeout
        self._workers: list[_Worker] = []
        self._starting = asyncio.Lock()  # concurrent first calls start one worker, not many

    async def rewrite_all(self, raw: bytes, plans: Sequence[RewritePlan]) -> list[RewriteResult]:
        if not self.processes or not plans:
            return self._inline(raw, plans)
        try:
            worker = await self._least_busy()
            return await asyncio.wait_for(worker.call(raw, list(plans)), self.timeout)
        except asyncio.TimeoutError:
            log.warning("a rewrite took longer than %gs: worker %d killed, the mail goes out untracked",
                        self.timeout, worker.proc.pid)
            worker.kill()
            return untracked(raw, plans, f"rewrite took longer than {self.timeout:g}s")
        except (WorkerGone, OSError) as e:  # OSError: no worker could be started
            log.error("rewrite worker failed (%s); rewriting this mail inline", e)
            return self._inline(raw, plans)

    def _inline(self, raw: bytes, plans: Sequence[RewritePlan]) -> list[RewriteResult]:
        if plans and len(raw) > self.timeout * SLOWEST_BYTES_PER_SECOND:
            return untracked(raw, plans, f"too large to rewrite on the event loop within {self.timeout:g}s "
                                         f"({len(raw)} bytes)")
        return rewrite_copies(raw, plans)

    async def _least_busy(self) -> _Worker:
        async with self._starting:
            self._workers = [w for w in self._workers if w.alive]
            if len(self._workers) < self.processes:
                self._workers.append(await _Worker.start())
        return min(self._workers, key=lambda w: len(w.pending))

    async def close(self) -> None:
        workers, self._workers = self._workers, []
        await asyncio.gather(*(w.stop() for w in workers))


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.stdin, self.stdout = proc.stdin, proc.stdout
        self.pending: deque[asyncio.Future] = deque()
        self.alive = True
        self._reader = asyncio.create_task(self._read_answers())

    @classmethod
    async def start(cls) -> _Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay.rewrite_worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=2**26)  # room for a whole answer in the stream's buffer
        return cls(proc)

    async def call(self, raw: bytes, plans: list[RewritePlan]) -> list[RewriteResult]:
        if not self.alive:
            raise WorkerGone("not running")
        answer = asyncio.get_running_loop().create_future()
        self.pending.append(answer)
        try:
            self.stdin.write(frame((raw, plans)))
            await self.stdin.drain()
        except OSError as e:  # the pipe broke: this call fails over with the others
            self._gone(WorkerGone(str(e)))
        return await answer

    async def _read_answers(self) -> None:
        try:
            while True:
                size = int.from_bytes(await self.stdout.readexactly(HEADER), "big")
                results = pickle.loads(await self.stdout.readexactly(size))
                answer = self.pending.popleft()
                if not answer.done():
                    answer.set_result(results)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            self._gone(WorkerGone(f"exit code {self.proc.returncode}" if self.proc.returncode is not None else str(e)))
        except Exception as e:  # a garbled answer: this worker cannot be trusted with more
            log.exception("rewrite worker sent an unreadable answer")
            self._gone(WorkerGone(f"unreadable answer: {e}"))
            self.proc.kill()

    def kill(self) -> None:
        """Stop it at once: its pending calls fail over, the pool starts another."""
        self.alive = False
        if self.proc.returncode is None:
            self.proc.kill()

    def _gone(self, error: WorkerGone) -> None:
        self.alive = False
        while self.pending:
            answer = self.pending.popleft()
            if not answer.done():
                answer.set_exception(error)

    async def stop(self, timeout: float = 10.0) -> None:
        """Close its stdin: the worker finishes what it has, then exits."""
        self.alive = False
        self.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        await self._reader
