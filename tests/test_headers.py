"""relay.headers: one place that knows where a message's header block ends."""
from __future__ import annotations

import pytest

from relay.headers import crlf_header_block, header_block, header_text


@pytest.mark.parametrize("raw, head", [
    (b"Subject: a\r\nFrom: b\r\n\r\nbody\r\n\r\nmore", b"Subject: a\r\nFrom: b\r\n"),
    (b"Subject: a\nFrom: b\n\nbody\n", b"Subject: a\r\nFrom: b\r\n"),
    (b"Subject: a\rX-Track: on\r\n\r\nbody", b"Subject: a\r\nX-Track: on\r\n"),  # a bare CR ends a line
    (b"Subject: a\r\n", b"Subject: a\r\n"),  # no body
    (b"Subject: a", b"Subject: a\r\n"),
    (b"", b"\r\n"),
])
def test_header_block(raw: bytes, head: bytes) -> None:
    assert header_block(raw) == head


def test_the_body_keeps_its_bytes() -> None:
    raw = b"Subject: a\n\nline\rwith bare CR\nand LF\n"
    assert crlf_header_block(raw) == b"Subject: a\r\n\r\nline\rwith bare CR\nand LF\n"
    assert crlf_header_block(b"Subject: a\r\n\r\nx\n") == b"Subject: a\r\n\r\nx\n"


@pytest.mark.parametrize("value, text", [
    (b"plain", "plain"), ("é ü".encode(), "é ü"), ("é".encode("latin-1"), "é"), (b"\xff\xfe", "\xff\xfe")])
def test_header_text_keeps_every_byte(value: bytes, text: str) -> None:
    assert header_text(value) == text
