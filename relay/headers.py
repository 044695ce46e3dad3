"""A message's header block: where it ends, and its line ends made CRLF. No I/O.

Intake makes the header block CRLF before anything reads it (crlf_header_block), so
the control reader, the rewriter, DSNs and the panel all see the same header lines.
"""
from __future__ import annotations

import re

_LINE_END = re.compile(rb"\r\n|\r|\n")


def crlf_header_block(raw: bytes) -> bytes:
    """``raw`` with every line end of its header block made CRLF, the body's bytes as they are.

    A bare CR or LF reads as a line end to some readers and not to others (aiosmtplib turns
    both into CRLF on the way out): made CRLF once, before anything reads a header, every
    layer sees the same header lines. Line ends are found as the upstream's normaliser finds
    them, so the block ends at the same empty line for every reader too.
    """
    blank = raw.find(b"\r\n\r\n")
    block = raw[:blank] if blank >= 0 else raw
    if blank >= 0 and block.count(b"\r") == block.count(b"\n") == block.count(b"\r\n"):
        return raw  # the usual case: already CRLF throughout
    previous_end = 0
    for m in _LINE_END.finditer(raw):
        if m.start() == previous_end:  # an empty line: the header block ends after it
            return _LINE_END.sub(b"\r\n", raw[:m.end()]) + raw[m.end():]
        previous_end = m.end()
    return _LINE_END.sub(b"\r\n", raw)  # no body: all of it is header block


def header_block(raw: bytes) -> bytes:
    """The message's header lines, CRLF, each ending with CRLF, without the blank line after them."""
    head = crlf_header_block(raw)
    blank = head.find(b"\r\n\r\n")
    if blank >= 0:
        return head[:blank + 2]
    return head if head.endswith(b"\r\n") else head + b"\r\n"


def header_text(value: bytes) -> str:
    """A header value as text: UTF-8 where it is valid (SMTPUTF8 mail, modern HTTP clients),
    else ISO-8859-1 (HTTP's historical charset), which keeps every byte."""
    if value.isascii():
        return value.decode("ascii")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")
