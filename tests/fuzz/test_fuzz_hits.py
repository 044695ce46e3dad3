"""Fuzz targets for the public hits server's request path (relay/http_hits.py): arbitrary and
hostile byte streams, cut at random places, fed to a connection of a real HitsServer (real
tracker and recorder over a real SQLite store). No input may crash it, make it answer
anything but well-formed HTTP, or cost more than linear time."""
from __future__ import annotations

import asyncio
import re
import tracemalloc
from pathlib import Path
from typing import Iterator

import pytest
import uvloop
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import assert_linear, fuzz
from relay.hit_recorder import HitRecorder, RecorderSettings
from relay.hit_tracker import HitTracker
from relay.http_hits import REASONS, HitsServer
from relay.metrics import Metrics
from relay.store.sqlite import SqliteStore

PEER = ("203.0.113.5", 40000)


class Wire(asyncio.Transport):
    """The socket under one connection, in memory: keeps what the server writes, and ends
    the connection as a transport does when the server closes it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.out = bytearray()
        self.closed = False
        self.protocol: asyncio.Protocol | None = None

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.out += data

    def write_eof(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.call_soon(self.protocol.connection_lost, None)

    abort = close

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return PEER if name == "peername" else default


class Hits:
    """A hits server's routes on their own event loop, fed one connection at a time."""

    def __init__(self, tmp: Path) -> None:
        self.loop = uvloop.new_event_loop()
        self.store = SqliteStore(str(tmp / "fuzz.db"))
        self.loop.run_until_complete(self.store.open())
        metrics = Metrics()
        recorder = HitRecorder(self.store, metrics, RecorderSettings(max_queue=1000))  # not started: queued only
        self.tracker = HitTracker(self.store, recorder, metrics)

    def exchange(self, chunks: list[bytes]) -> bytes:
        """Open a connection, send the chunks and end the stream; what the server answered."""
        return self.loop.run_until_complete(self._exchange(chunks))

    async def _exchange(self, chunks: list[bytes]) -> bytes:
        server = HitsServer(self.tracker)
        wire = Wire(self.loop)
        conn = wire.protocol = server.protocol()
        conn.connection_made(wire)
        for chunk in chunks:
            if wire.closed:
                break
            conn.data_received(chunk)
        if not wire.closed and not conn.eof_received():
            wire.close()  # as a transport does when the protocol has nothing more to say
        await server.close(timeout=10)
        assert not server.connections
        return bytes(wire.out)

    def close(self) -> None:
        self.loop.run_until_complete(self.store.close())
        self.loop.close()


@pytest.fixture(scope="module")
def hits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hits]:
    h = Hits(tmp_path_factory.mktemp("fuzz-hits"))
    yield h
    h.close()


ANSWER_HEAD = re.compile(rb"HTTP/1\.1 (\d{3}) ([A-Za-z ]+)\r\n((?:[A-Za-z-]+: [\x20-\x7e]*\r\n)*)\r\n")


def answers(out: bytes) -> list[int]:
    """The statuses of a stream of answers, asserting that each is well-formed HTTP/1.1."""
    found, pos = [], 0
    while pos < len(out):
        head = ANSWER_HEAD.match(out, pos)
        assert head, out[pos:pos + 200]
        status = int(head.group(1))
        assert REASONS.get(status) == head.group(2).decode(), head.group(0)
        length = re.search(rb"(?m)^Content-Length: (\d+)\r$", head.group(3))
        assert length, head.group(0)
        pos = head.end()
        if pos < len(out) and not out.startswith(b"HTTP/1.1 ", pos):  # a HEAD answer has no body
            pos += int(length.group(1))
        found.append(status)
    assert pos == len(out)
    return found


def cut(stream: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


TOKEN = b"Q" * 24  # the shape of a real token, unknown to the store


def requests(long_value: int) -> st.SearchStrategy[bytes]:
    """Streams made of request pieces (and some noise); X-Long headers of long_value bytes."""
    pieces = st.sampled_from([
        b"GET ", b"HEAD ", b"POST ", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"/o/" + TOKEN + b".gif",
        b"/c/" + TOKEN + b"/0", b"/healthz", b"/", b"%2F", b"%", b" HTTP/1.1\r\n", b" HTTP/1.0\r\n",
        b"Host: t.example\r\n", b"User-Agent: Mozilla/5.0\r\n", b"X-Forwarded-For: 198.51.100.7, ::1\r\n",
        b"Sec-Purpose: prefetch\r\n", b"Connection: close\r\n", b"Connection: upgrade\r\nUpgrade: h2c\r\n",
        b"Content-Length: 3\r\n", b"Content-Length: 99999999\r\n", b"Transfer-Encoding: chunked\r\n",
        b"3\r\nabc\r\n0\r\n\r\n", b"0\r\nX-Trailer: t\r\n\r\n", b"X-Long: " + b"v" * long_value + b"\r\n",
        b"\r\n", b"\r\n\r\n", b"\n", b"\r", b":", b" ", b"\t", b"\x00", b"\xff", b"abc",
    ])
    return st.lists(pieces | st.binary(max_size=12), max_size=40).map(b"".join)


CUTS = st.lists(st.integers(min_value=0), max_size=20)


@fuzz
@given(st.binary(max_size=400) | requests(long_value=3000), CUTS)
def test_any_bytes_in_any_chunks_get_well_formed_answers(hits, stream, cuts):
    statuses = answers(hits.exchange(cut(stream, cuts)))
    assert 500 not in statuses


@fuzz
@given(requests(long_value=300), CUTS)  # below every size limit: near one, counts are "at most"
def test_request_shaped_streams_get_the_same_answers_in_any_chunks(hits, stream, cuts):
    whole = answers(hits.exchange([stream]))
    assert 500 not in whole
    assert answers(hits.exchange(cut(stream, cuts))) == whole


def _streams(n: int) -> list[list[bytes]]:
    """Hostile shapes of about n KB, sent in 1 KB chunks (or one byte at a time)."""
    kb = b"a" * 1024
    get = b"GET /o/x.gif HTTP/1.1\r\nHost: t\r\n\r\n"
    return [
        [b"GET /o/x.gif HTTP/1.1\r\nX-Big: "] + [kb] * n,                 # one header value that never ends
        [b"GET /o/x.gif HTTP/1.1\r\nX-Big"] + [kb] * n,                   # one header name that never ends
        [b"GET /o/"] + [kb] * n,                                           # a request target that never ends
        [b"GET /o/x.gif HTTP/1.1\r\n"] + [b"X-A: b\r\n" * 128] * n,       # header after header
        [b"GET /o/x.gif HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: "] + [kb] * n,
        [get * 28] * n,                                                    # pipelined requests
        [bytes([c]) for c in get * (n // 32 + 1)],                         # one byte at a time
        [b"GET /o/x.gif HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"] + [b"1\r\na\r\n" * 128] * n,
    ]


@pytest.mark.parametrize("shape", range(len(_streams(1))))
def test_the_request_path_is_linear_on_hostile_shapes(hits, shape):
    assert_linear(lambda n: _streams(n)[shape], hits.exchange, small=64)


@pytest.mark.parametrize("shape", range(5))
def test_an_endless_request_head_holds_no_more_than_its_limits(hits, shape):
    """A megabyte of one unfinished request: the server holds no more of it than the request
    may have (16 KB of head, 64 KB more past it), however long the client goes on."""
    stream = _streams(1024)[shape]
    tracemalloc.start()
    try:
        hits.exchange(stream)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024, peak
