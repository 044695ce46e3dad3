"""The relay's speed-ups to aiosmtpd and aiosmtplib live in its own subclasses: the libraries,
and every other user of them in the process (the tests' sinks and clients), run as they ship."""
from __future__ import annotations

import asyncio
import inspect
import re
import subprocess
import sys
from pathlib import Path

import aiosmtpd.smtp
import aiosmtplib
import aiosmtplib.protocol
from aiosmtpd.smtp import SMTP, AuthResult

import relay.delivery  # noqa: F401 (all of ours imported: none of it may change the libraries)
import relay.smtpd
import relay.upstream  # noqa: F401
from relay.smtpd import RelayHandler, RelaySMTP, SmtpPolicy
from relay.config import UpstreamTarget
from relay.upstream import SmtpUpstream
from test_smtp_limits import Raw


def test_the_libraries_module_attributes_are_their_own():
    assert aiosmtpd.smtp.inspect is inspect
    assert aiosmtplib.protocol.normalize_message_line_endings.__module__ == "aiosmtplib.protocol"
    assert isinstance(aiosmtplib.protocol.PERIOD_REGEX, re.Pattern)
    assert aiosmtplib.protocol.PERIOD_REGEX.pattern == rb"(?m)^\."


class TokenHandler:
    """A plain aiosmtpd handler whose AUTH mechanism is an instance attribute: aiosmtpd finds it
    with inspect.getmembers, which a per-class shortcut would miss."""

    def __init__(self) -> None:
        self.auth_XTOKEN = self._token

    async def _token(self, server: SMTP, args: list[str]) -> AuthResult:
        return AuthResult(success=True)


async def test_a_plain_aiosmtpd_server_works_as_shipped():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(TokenHandler(), auth_require_tls=False, loop=loop),
                                      "127.0.0.1", 0)
    raw = await Raw.open(server.sockets[0].getsockname()[1])
    try:
        code, text = await raw.cmd("EHLO client.test")
        assert code == 250 and "XTOKEN" in text, text
        assert (await raw.cmd("MAIL FROM:<a@example.com>"))[0] == 250
        assert (await raw.cmd("RCPT TO:<b@example.com>"))[0] == 250
        assert (await raw.cmd("DATA"))[0] == 354
        # its own line reader, with its own 1001-byte limit (ours reads DATA in chunks, up to 8192)
        raw.writer.write(b"Subject: x\r\n\r\n" + b"y" * 2000 + b"\r\n.\r\n")
        code, text = await raw.reply()
        assert code == 500 and "Line too long" in text, (code, text)
    finally:
        await raw.close()
        server.close()


async def test_ours_keep_their_fast_paths(sink):
    loop = asyncio.get_running_loop()
    handler = RelayHandler(None, SmtpPolicy(hostname="x", max_message_size=1000, max_line_length=8192))
    ours = RelaySMTP(handler, max_line_length=8192, hostname="x", loop=loop)
    names = dir(ours)  # what aiosmtpd scans on every connection: only the members it looks for
    assert "smtp_DATA" in names and "auth_PLAIN" in names and "push" not in names
    assert "push" in dir(SMTP(handler, loop=loop))
    assert sorted(ours._auth_methods) == ["LOGIN", "PLAIN"]
    upstream = SmtpUpstream(UpstreamTarget("smtp", "127.0.0.1", sink.port))
    try:
        outcome = await upstream.send("a@example.com", ["b@example.org"], b"Subject: x\n\n.dot\n")
        assert outcome.ok, outcome
        [conn] = [conn for idle in upstream._idle.values() for conn, _ in idle]
        assert type(conn.protocol).__name__ == "_FastDataProtocol"
    finally:
        await upstream.close()
    [got] = await sink.wait_for(1)
    assert got.data == b"Subject: x\r\n\r\n.dot\r\n"  # CRLF made and the dot stuffed (and unstuffed)


def test_the_delivery_role_does_not_load_the_smtp_server():
    # the delivery process imports relay.delivery: aiosmtpd has no business there
    probe = "import sys, relay.delivery, relay.delivery_process; print('aiosmtpd' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
