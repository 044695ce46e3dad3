"""Fuzz targets for SMTP intake: the control-header reader (relay/control.py) and the DATA
reader (relay/smtpd.py DataReader). No input may raise, hang or cost more than linear time."""
from __future__ import annotations

import gc

from hypothesis import given
from hypothesis import strategies as st

from fuzzing import assert_linear, fuzz
from relay.control import read_controls, strip_controls
from relay.headers import crlf_header_block
from relay.intake import owns_header_from
from relay.smtpd import DataReader

# --- the control-header reader ---------------------------------------------------------

_PIECES = st.sampled_from([
    b"X-Track: ", b"x-track:on", b"X-PM-TrackLinks: TextOnly", b"X-Mailgun-Track: yes", b"Subject: ",
    b"[track]", b"[notrack]", b"[TRACK]", b"[tr", b"ack]", b"=?", b"?=", b"=?utf-8?q?", b"=?UTF-8?B?",
    b"W3RyYWNrXQ==", b"=5Btrack=5D", b"_", b"?q?", b"?b?", b" ", b"\t", b"\r\n", b"\n", b"\r", b"\r\n ",
    b"\r\n\t", b":", b"From ", b"\xc3\xa9", b"\xff", b"x", b",", b"on", b"off",
])
HEADER_BLOCKS = st.lists(_PIECES | st.binary(max_size=8), max_size=40).map(b"".join)


@fuzz
@given(HEADER_BLOCKS, st.binary(max_size=30))
def test_the_control_reader_never_raises_and_strip_is_idempotent(head, body):
    raw = head + b"\r\n\r\n" + body
    read_controls(raw)
    once = strip_controls(raw)
    assert strip_controls(once) == once
    read_controls(once)


@fuzz
@given(HEADER_BLOCKS, st.binary(max_size=30))
def test_after_strip_no_control_header_is_left(head, body):
    raw = crlf_header_block(head + b"\r\n\r\n" + body)  # as intake hands it over
    assert read_controls(strip_controls(raw)).header is None


def _control_shapes(n: int) -> list[bytes]:
    return [
        b"Subject: a" + b"\r\n b" * n + b"\r\n\r\nbody",                       # a long folded header
        b"Subject: " + b"=?utf-8?q?[track]?= " * (n // 20) + b"\r\n\r\n",     # many encoded words
        b"Subject: " + b"=?" * n + b"\r\n\r\n",                                # a run of =?
        b"Subject: " + b"=?utf-8?q?" * (n // 10) + b"?=" * (n // 10) + b"\r\n\r\n",
        b"X-Track: " + b"on, " * (n // 4) + b"\r\n\r\n",
        b"X-Track: on\r\n" * (n // 12) + b"\r\n",                              # many control fields
        b"Subject: " + b"[track] " * (n // 8) + b"\r\n\r\n",                   # many tags to strip
    ]


def _without_gc(raw: bytes) -> None:
    # the reader makes an object per header character: the collector's passes over the
    # whole process's heap would be timed with it, and they grow with the heap, not the input
    gc.disable()
    try:
        read_controls(raw), strip_controls(raw), crlf_header_block(raw)
    finally:
        gc.enable()


def test_the_control_reader_is_linear_on_adversarial_shapes():
    for shape in range(len(_control_shapes(0))):
        assert_linear(lambda n, i=shape: _control_shapes(n)[i], _without_gc)


@fuzz
@given(HEADER_BLOCKS | st.binary(max_size=60).map(lambda v: b"From: " + v))
def test_the_from_check_never_raises(head):
    owns_header_from(crlf_header_block(head + b"\r\n\r\n"), "address", "alice@example.com")


def test_the_from_check_is_linear():
    shapes = [b"alice@example.com, ", b'"', b"(", b"((a)", b"<", b"\\", b'"a",', b"From: a\r\n"]
    for piece in shapes:
        assert_linear(lambda n, p=piece: b"From: " + p * (n // len(p)) + b"\r\n\r\n",
                      lambda raw: owns_header_from(raw, "domain", "alice@example.com"))


# --- the DATA reader -------------------------------------------------------------------

def stuffed(message: bytes) -> bytes:
    """What a client sends for `message` (which ends in CRLF or is empty), end marker included."""
    return (b"\r\n" + message).replace(b"\r\n.", b"\r\n..")[2:] + b".\r\n"


def read(stream: bytes, cuts: list[int], size_limit: int = 0, line_limit: int = 8192):
    """Feed `stream` cut at `cuts`: (message, refusal, leftover), or None if the end never came."""
    reader = DataReader(size_limit, line_limit)
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    for a, b in zip(bounds, bounds[1:]):
        leftover = reader.feed(stream[a:b])
        if leftover is not None:
            return (*reader.result(), leftover + stream[b:])
    return None


LINES = st.lists(st.sampled_from([b"", b".", b"..", b".x", b"x.", b"\r", b"\n", b"a" * 30, b"\r\n.\r"])
                 | st.binary(max_size=12), max_size=30)


@fuzz
@given(LINES, st.binary(max_size=20), st.lists(st.integers(min_value=0), max_size=12))
def test_any_split_gives_the_message_unstuffed(lines, tail, cuts):
    message = b"".join(line + b"\r\n" for line in lines)
    stream = stuffed(message) + tail
    whole = read(stream, [])
    assert whole is not None and read(stream, cuts) == whole
    data, refusal, leftover = whole
    assert (data, refusal) == (message, None) and leftover == tail


@fuzz
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0), max_size=12))
def test_arbitrary_streams_give_the_same_result_in_any_chunks(stream, cuts):
    assert read(stream, cuts) == read(stream, [])
    assert read(stream, cuts, size_limit=50, line_limit=20) == read(stream, [], size_limit=50, line_limit=20)


@fuzz
@given(LINES, st.integers(min_value=1, max_value=200), st.integers(min_value=1, max_value=40),
       st.lists(st.integers(min_value=0), max_size=12))
def test_size_and_line_limits_are_enforced(lines, size_limit, line_limit, cuts):
    message = b"".join(line + b"\r\n" for line in lines)
    on_the_wire = stuffed(message)[:-3]  # the stuffed message without the final ".\r\n"
    data, refusal, _ = read(stuffed(message), cuts, size_limit, line_limit)
    if len(on_the_wire) > size_limit:
        assert (data, refusal) == (b"", "552 5.3.4 Message too big for system")
    elif any(len(line) > line_limit + 1 for line in on_the_wire.split(b"\n")):  # the limit, and a CR
        assert data == b"" and refusal.startswith("500 5.5.6")
    else:
        assert (data, refusal) == (message, None)


def test_the_data_reader_is_linear():
    shapes = [
        lambda n: stuffed(b".\r\n" * n),                     # every line dot-stuffed
        lambda n: stuffed(b"x" * n + b"\r\n"),               # one long line
        lambda n: b"\r\n." * n + b"\r\n.\r\n",               # near-markers everywhere
    ]
    for make in shapes:
        assert_linear(lambda n, make=make: make(n * 8), lambda stream: read(stream, list(range(0, len(stream), 64))))
        assert_linear(lambda n, make=make: make(n * 8), lambda stream: read(stream, [], size_limit=1000))
