"""Delivery in a child process of `serve`, so SMTP intake and delivery each have a core.

The parent holds the child's stdin: a byte on it means "mail was spooled, look now", and
its end (the parent exited, even by kill -9) means "finish what is in flight and stop".
The child answers on its stdout: `ready`, then its delivery counts as JSON lines.
Both sides share the store; the child claims mail as any `--only delivery` process does.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections import Counter
from typing import Awaitable, BinaryIO, Callable, Mapping, Sequence

from relay.errors import StartupError

log = logging.getLogger(__name__)
READY = b"ready\n"


class DeliveryProcess:
    """The parent's side: start the child, wake it, restart it if it dies, stop it."""

    def __init__(self, argv: Sequence[str], *, start_timeout: float = 60.0, stop_timeout: float = 30.0,
                 restart_delays: tuple[float, float] = (1.0, 60.0)) -> None:
        self.argv = list(argv)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.restart_delays = restart_delays
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task | None = None
        self._stop = asyncio.Event()
        self._earlier: Counter[str] = Counter()  # counts of children that are gone
        self._current: dict[str, int] = {}

    @property
    def counts(self) -> dict[str, int]:
        return dict(self._earlier + Counter(self._current))

    async def start(self) -> None:
        self._proc = await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="delivery-process")

    def wake(self) -> None:
        stdin = self._proc.stdin if self._proc else None
        # one pending byte is enough: the child looks at the whole queue when it wakes
        if stdin is None or stdin.is_closing() or stdin.transport.get_write_buffer_size():
            return
        try:
            stdin.write(b".")
        except (ConnectionError, RuntimeError):  # it just died: the supervisor starts another
            pass

    async def stop(self) -> None:
        """Close its stdin, wait for it to finish in-flight mail; kill it after stop_timeout."""
        self._stop.set()
        if self._proc and self._proc.returncode is None:
            self._proc.stdin.close()
        if not self._supervisor:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._supervisor), self.stop_timeout)
        except asyncio.TimeoutError:
            log.error("delivery process %d did not stop in %.0f s: killing it", self._proc.pid, self.stop_timeout)
            self._proc.kill()
            await self._supervisor

    async def _spawn(self) -> asyncio.subprocess.Process:
        # its stderr is ours: its log lines and a start-up error land where ours do
        proc = await asyncio.create_subprocess_exec(*self.argv, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE)
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), self.start_timeout)
        except asyncio.TimeoutError:
            line = b""
        if line != READY:
            if proc.returncode is None:
                proc.kill()
            status = await proc.wait()
            raise StartupError(f"the delivery process did not start (exit status {status}; its error is above)")
        log.info("delivery runs in process %d", proc.pid)
        return proc

    async def _supervise(self) -> None:
        delay: float | None = None
        while self._proc:
            proc, started = self._proc, time.monotonic()
            async for line in proc.stdout:
                self._current = parse_counts(line, self._current)
            status = await proc.wait()
            self._earlier.update(self._current)
            self._current = {}
            if self._stop.is_set():
                return
            # a child that ran a while gets a quick restart; one that keeps dying, slower ones
            ran_long = time.monotonic() - started > 60
            delay = self.restart_delays[0] if ran_long or delay is None else min(delay * 2, self.restart_delays[1])
            log.error("delivery process %d exited with status %s: starting another in %.0f s", proc.pid, status, delay)
            self._proc = await self._respawn(delay)

    async def _respawn(self, delay: float) -> asyncio.subprocess.Process | None:
        """A new child after delay (longer after each failed start); None if we are stopping."""
        while not await _set_within(self._stop, delay):
            try:
                proc = await self._spawn()
            except (StartupError, OSError) as e:
                delay = min(delay * 2, self.restart_delays[1])
                log.error("%s: trying again in %.0f s", e, delay)
                continue
            if self._stop.is_set():  # stop() came while it started: it ends as the old one would
                proc.stdin.close()
            return proc
        return None


async def _set_within(event: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except asyncio.TimeoutError:
        return False
    return True


def parse_counts(line: bytes, previous: dict[str, int]) -> dict[str, int]:
    """One report line from the child -> its counts; anything else keeps the previous ones."""
    try:
        counts = json.loads(line)
    except ValueError:
        return previous
    if not isinstance(counts, dict) or not all(isinstance(v, int) for v in counts.values()):
        return previous
    return counts


async def serve_parent(wake: Callable[[], None], counts: Callable[[], Mapping[str, int]],
                       stop: Callable[[], Awaitable[None]]) -> None:
    """The child's side, once delivery runs: until our stdin ends, wake on every byte and
    report counts (at most once a second, when they changed); then stop, and report last."""
    # the parent decides when we stop (it closes our stdin); ^C and SIGTERM reach it too
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    loop = asyncio.get_running_loop()
    gone = asyncio.Event()

    class Parent(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            wake()

        def connection_lost(self, exc: Exception | None) -> None:
            gone.set()

    await loop.connect_read_pipe(Parent, sys.stdin.buffer)
    out: BinaryIO | None = sys.stdout.buffer
    out.write(READY)
    out.flush()
    reported: dict[str, int] = {}

    def report() -> None:
        nonlocal reported, out
        now = dict(counts())
        if now == reported or out is None:
            return
        try:
            out.write(json.dumps(now).encode() + b"\n")
            out.flush()
        except BrokenPipeError:  # the parent is gone (kill -9): we still finish the mail in flight
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())  # so the exit flush is quiet too
            out = None
        reported = now

    while not await _set_within(gone, 1.0):
        report()
    await stop()
    report()
