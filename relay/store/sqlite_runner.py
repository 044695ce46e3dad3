"""Run sqlite3 work off the event loop: one writer thread with group commit, reader threads.

Why not aiosqlite: under HTTP load its worker thread starves and a cancelled flush
loses rows (DESIGN, "Measured"). Here the write jobs waiting at once run in one
transaction, and one COMMIT (one fsync) answers them all, so twenty SMTP sessions
spooling at once cost one disk sync, not twenty. If a job fails, the batch is rolled
back and run again with each job in its own SAVEPOINT, so only that job fails.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from relay.errors import StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]
MAX_BATCH = 500


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before the relay answers 250 (invariant 1).
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    # Freed pages are zeroed, so an erased body is gone from the file, not only unlinked.
    conn.execute("PRAGMA secure_delete=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class SqliteRunner:
    def __init__(self, path: str, readers: int = 2) -> None:
        self.path = path
        self._jobs: queue.SimpleQueue[tuple[Job, asyncio.Future, asyncio.AbstractEventLoop] | None] = (
            queue.SimpleQueue()
        )
        self._writer: threading.Thread | None = None
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="sqlite-read")
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def start(self, writer_conn: sqlite3.Connection) -> None:
        self._writer = threading.Thread(target=self._write_loop, args=(writer_conn,),
                                        name="sqlite-writer", daemon=True)
        self._writer.start()

    async def write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run job in a transaction; returns once it is committed to disk."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        with self._lock:  # a job queued behind close()'s stop mark would wait forever
            if self._closed or self._writer is None:
                raise StoreUnavailable(f"store {self.path} is closed")
            self._jobs.put((job, fut, loop))
        # shield: a cancelled caller must not lose a write that is already queued
        return await asyncio.shield(fut)

    async def read(self, job: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._run_read, job)

    async def read_point(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """A read an index answers in microseconds, run on the caller's thread: the hand-off
        to a reader thread and back cost more than the query (SMTP intake: +10 % mail/s)."""
        return self._run_read(job)

    def _run_read(self, job: Job) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        try:
            return job(conn)
        except sqlite3.OperationalError as e:
            raise StoreUnavailable(f"store read failed: {e}") from e

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._writer is not None:
                self._jobs.put(None)
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        self._readers.shutdown(wait=True)
        with self._lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        stopping = False
        while not stopping:
            first = self._jobs.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._run_batch(conn, batch)
        conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list) -> None:
        try:
            jobs = [job for job, _, _ in batch]
            try:
                results = _run_jobs(conn, jobs, _job_in_batch)
            except _JobFailed:
                results = _run_jobs(conn, jobs, _job_alone)  # again, so the failing job fails alone
        except sqlite3.Error as e:
            log.error("store write failed: %s", e)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            err = StoreUnavailable(f"store write failed: {e}")
            results = [(False, err)] * len(batch)
        settled: dict[asyncio.AbstractEventLoop, list] = {}
        for (_, fut, loop), (ok, value) in zip(batch, results):
            settled.setdefault(loop, []).append((fut, ok, value))
        for loop, items in settled.items():
            try:
                loop.call_soon_threadsafe(_settle_all, items)
            except RuntimeError:  # the caller's loop is gone; the write itself is committed
                pass


class _JobFailed(Exception):
    """A job raised in a batch run without savepoints: the batch is rolled back and rerun."""


def _run_jobs(conn: sqlite3.Connection, jobs: list[Job],
              run_job: Callable[[sqlite3.Connection, Job], tuple[bool, Any]]) -> list[tuple[bool, Any]]:
    """The jobs in one transaction, one commit."""
    conn.execute("BEGIN IMMEDIATE")
    results = [run_job(conn, job) for job in jobs]
    conn.execute("COMMIT")
    return results


def _job_in_batch(conn: sqlite3.Connection, job: Job) -> tuple[bool, Any]:
    """Without a savepoint: two statements less per job (each statement gives the GIL up and
    waits to take it back, which under load is most of a write's latency). A failure rolls
    the whole batch back and raises _JobFailed."""
    try:
        return True, job(conn)
    except Exception as e:
        if conn.in_transaction:  # some errors end the transaction themselves
            conn.execute("ROLLBACK")
        raise _JobFailed() from e


def _job_alone(conn: sqlite3.Connection, job: Job) -> tuple[bool, Any]:
    """In a savepoint: a bad job fails alone, the batch goes on."""
    conn.execute("SAVEPOINT job")
    try:
        result: tuple[bool, Any] = (True, job(conn))
    except Exception as e:
        conn.execute("ROLLBACK TO job")
        result = (False, e)
    conn.execute("RELEASE job")
    return result


def _settle_all(items: list[tuple[asyncio.Future, bool, Any]]) -> None:
    for fut, ok, value in items:
        _settle(fut, ok, value)


def _settle(fut: asyncio.Future, ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)
