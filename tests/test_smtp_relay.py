"""The relay end to end over real SMTP: clients in, an aiosmtpd sink as the upstream."""
from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import subprocess
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import compat32

import aiosmtplib
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import PASSWORD, add_user, both_engines, make_config, relay_to, require_tool
from corpus import corpus_files, require_corpus
from relay.upstream import crlf_everywhere, dot_stuff


def simple_mail(sender: str = "alice@example.com", to: str = "bob@example.org", subject: str = "hello",
                body: str = "Hi Bob,\n\nlunch?\n") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Message-ID"] = "<abc123@example.com>"
    msg.set_content(body)
    return msg.as_bytes().replace(b"\n", b"\r\n")


async def send(port: int, data: bytes, *, sender: str = "alice@example.com", rcpts=("bob@example.org",),
               login: tuple[str, str] | None = ("alice@example.com", PASSWORD), mail_options=None) -> tuple:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await client.connect()
    try:
        if login:
            await client.login(*login)
        return await client.sendmail(sender, list(rcpts), data, mail_options=mail_options)
    finally:
        await client.quit()


async def wait_status(app, message_id: int, status: str, timeout: float = 10.0) -> dict:
    """The sink sees a mail a moment before the relay records the result: poll for it."""
    for _ in range(int(timeout / 0.05)):
        row = await app.store.message_row(message_id)
        if row and row["status"] == status:
            return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"message {message_id} is {row and row['status']}, not {status}")


@both_engines
async def test_authenticated_mail_is_delivered_unchanged(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path)
    data = simple_mail()
    errors, reply = await send(app.port("smtp"), data)
    assert errors == {} and "queued as" in reply
    [got] = await sink.wait_for(1)
    assert got.mail_from == "alice@example.com" and got.rcpt_tos == ["bob@example.org"]
    assert got.data == data


async def test_wrong_password_is_refused(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as e:
        await send(app.port("smtp"), simple_mail(), login=("alice@example.com", "wrong password"))
    assert e.value.code == 535
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await send(app.port("smtp"), simple_mail(), login=("nobody@example.com", PASSWORD))


async def test_a_login_logs_no_deprecation_warning(sink, start_app, tmp_path, caplog):
    app = await relay_to(sink, start_app, tmp_path)
    with caplog.at_level(logging.WARNING):
        await send(app.port("smtp"), simple_mail())
    [got] = await sink.wait_for(1)
    assert got.mail_from == "alice@example.com"  # the login happened and worked
    assert not [r for r in caplog.records if "deprecated" in r.getMessage()], caplog.text


async def test_no_auth_no_relay(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as e:
        await send(app.port("smtp"), simple_mail(), login=None)
    assert e.value.code == 530
    # a mail that was allowed in behind it is the first and only one the relay spooled
    await send(app.port("smtp"), simple_mail(subject="with auth"))
    [got] = await sink.wait_for(1)
    assert got.data == simple_mail(subject="with auth")
    await wait_status(app, 1, "sent")
    assert await app.store.message_row(2) is None


async def test_auth_needs_tls_on_a_non_loopback_listener(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path, smtp_listen="0.0.0.0:0")
    port = app.port("smtp")
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await client.connect()
    await client.ehlo()
    assert "auth" not in client.esmtp_extensions and "starttls" in client.esmtp_extensions
    code, _ = await client.execute_command(b"AUTH", b"PLAIN", b"AGFsaWNlQGV4YW1wbGUuY29tAHg=")
    assert code == 538
    await client.quit()
    # after STARTTLS the same login works
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=True, tls_context=ctx)
    await client.connect()
    await client.login("alice@example.com", PASSWORD)
    await client.sendmail("alice@example.com", ["bob@example.org"], simple_mail())
    await client.quit()
    assert len(await sink.wait_for(1)) == 1


async def test_implicit_tls_listener(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path, smtp_listen="0.0.0.0:0", smtp_tls_listen="0.0.0.0:0")
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=app.port("smtps"), use_tls=True, tls_context=ctx)
    await client.connect()
    await client.login("alice@example.com", PASSWORD)
    await client.sendmail("alice@example.com", ["bob@example.org"], simple_mail())
    await client.quit()
    assert len(await sink.wait_for(1)) == 1


async def test_foreign_sender_is_refused(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as e:
        await send(app.port("smtp"), simple_mail(sender="ceo@example.com"), sender="ceo@example.com")
    assert e.value.code == 553


async def test_oversized_mail_gets_552_and_the_session_goes_on(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path, smtp_max_message_size="50000")
    big = simple_mail(body="x" * 70 + "\n") + b"y" * 70 * 1000 + b"\r\n" * 1000
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=app.port("smtp"), start_tls=False)
    await client.connect()
    await client.ehlo()
    assert client.esmtp_extensions["size"] == "50000"
    await client.login("alice@example.com", PASSWORD)
    # a client that does not declare SIZE is refused after DATA
    await client.mail("alice@example.com")
    await client.rcpt("bob@example.org")
    with pytest.raises(aiosmtplib.SMTPDataError) as e:
        await client.data(big)
    assert e.value.code == 552
    # one that declares it is refused at MAIL FROM
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as e:
        await client.mail("alice@example.com", options=[f"SIZE={len(big)}"])
    assert e.value.code == 552
    await client.rset()
    await client.sendmail("alice@example.com", ["bob@example.org"], simple_mail())
    await client.quit()
    [got] = await sink.wait_for(1)
    assert got.data == simple_mail()


async def test_long_lines_8bit_and_smtputf8(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path, smtp_max_line_length="5000")
    long_line = b"<p>" + b"a" * 3000 + b"</p>"
    eight_bit = ("From: alice@example.com\r\nTo: j\u00fcrgen@b\u00fccher.example\r\nSubject: Gr\u00fc\u00dfe\r\n"
                 "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
                 "Content-Transfer-Encoding: 8bit\r\n\r\n<p>Sch\u00f6ne Gr\u00fc\u00dfe</p>\r\n").encode() + long_line + b"\r\n"
    await send(app.port("smtp"), eight_bit, rcpts=["j\u00fcrgen@b\u00fccher.example"],
               mail_options=["BODY=8BITMIME", "SMTPUTF8"])
    [got] = await sink.wait_for(1)
    assert got.data == eight_bit and got.rcpt_tos == ["j\u00fcrgen@b\u00fccher.example"]
    too_long = simple_mail() + b"b" * 6000 + b"\r\n"
    with pytest.raises(aiosmtplib.SMTPDataError) as e:
        await send(app.port("smtp"), too_long)
    assert e.value.code == 500


async def test_dot_stuffing_round_trips(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path)
    data = simple_mail(body=".leading dot\n..two dots\n.\nend\n")
    await send(app.port("smtp"), data)
    [got] = await sink.wait_for(1)
    assert got.data == data


@given(st.lists(st.sampled_from([b".", b"..", b"\r\n", b"\n", b"\r", b"x"])).map(b"".join))
def test_our_dot_stuffing_gives_aiosmtplib_s_bytes(message):
    assert dot_stuff(message) == aiosmtplib.protocol.PERIOD_REGEX.sub(b"..", message)


async def test_upstream_4xx_then_recovery(sink, start_app, tmp_path):
    sink.replies = ["451 4.3.0 try later", "421 4.3.2 busy"]
    app = await relay_to(sink, start_app, tmp_path)
    await send(app.port("smtp"), simple_mail())
    [got] = await sink.wait_for(1, timeout=20)
    assert got.data == simple_mail()
    row = await wait_status(app, 1, "sent")
    assert row["recipients"][0]["attempts"] == 3
    assert row["has_body"] is False


async def test_5xx_bounces_with_a_dsn_from_the_null_sender(sink, start_app, tmp_path):
    sink.rcpt_replies = {"gone@example.org": "550 5.1.1 <gone@example.org>: no such user"}
    app = await relay_to(sink, start_app, tmp_path)
    await send(app.port("smtp"), simple_mail(), rcpts=["bob@example.org", "gone@example.org"])
    msgs = await sink.wait_for(2)
    normal = [m for m in msgs if m.mail_from == "alice@example.com"]
    dsn = [m for m in msgs if m.mail_from == ""]
    assert normal[0].rcpt_tos == ["bob@example.org"]
    assert dsn and dsn[0].rcpt_tos == ["alice@example.com"]
    report = BytesParser(policy=compat32).parsebytes(dsn[0].data)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    status = report.get_payload()[1].as_string()
    assert "Final-Recipient: rfc822; gone@example.org" in status and "Status: 5.1.1" in status
    assert b"Message-ID: <abc123@example.com>" in dsn[0].data
    await wait_status(app, 1, "partial")


@both_engines
async def test_a_retry_that_bounces_the_deferred_recipient_rolls_up_to_partial(sink, start_app, tmp_path):
    sink.rcpt_replies = {"carol@example.org": "451 4.3.0 try later"}
    app = await relay_to(sink, start_app, tmp_path)
    await send(app.port("smtp"), simple_mail(), rcpts=["bob@example.org", "carol@example.org"])
    [first] = await sink.wait_for(1)
    assert first.rcpt_tos == ["bob@example.org"]
    assert (await wait_status(app, 1, "deferred"))["has_body"]  # carol still waits for it
    sink.rcpt_replies = {"carol@example.org": "550 5.1.1 no such user"}
    # the retry knows bob was sent only from its claim: the partial roll-up and the body's erasure need it
    row = await wait_status(app, 1, "partial")
    assert [(r["address"], r["status"]) for r in row["recipients"]] == [
        ("bob@example.org", "sent"), ("carol@example.org", "bounced")]
    assert not row["has_body"] and row["sent_at"] is not None
    [dsn] = (await sink.wait_for(2))[1:]
    assert dsn.mail_from == "" and b"carol@example.org" in dsn.data


async def test_null_sender_mail_never_gets_a_dsn(sink, start_app, tmp_path):
    sink.rcpt_replies = {"alice@example.com": "550 5.1.1 no such user",
                         "gone@example.org": "550 5.1.1 no such user"}
    app = await relay_to(sink, start_app, tmp_path)
    await send(app.port("smtp"), simple_mail(), rcpts=["gone@example.org"])
    # the original bounces; its DSN to alice bounces too, and that bounce (recorded with any DSN
    # of its own in one transaction) is the last word: nothing can follow it
    await wait_status(app, 2, "bounced")
    rows = [await app.store.message_row(i) for i in (1, 2, 3)]
    assert rows[0]["status"] == "bounced" and rows[1]["status"] == "bounced" and rows[1]["mail_from"] == ""
    assert rows[2] is None and sink.messages == []


async def test_expired_mail_bounces_after_max_age(sink, start_app, tmp_path):
    sink.rcpt_replies = {"bob@example.org": "451 4.3.0 try later"}
    app = await relay_to(sink, start_app, tmp_path, delivery_max_age="2s")
    await send(app.port("smtp"), simple_mail())
    dsn = (await sink.wait_for(1, timeout=20))[0]
    assert dsn.mail_from == "" and b"Status: 4.4.7" in dsn.data


async def test_passthrough_uses_the_users_own_login(start_app, tmp_path):
    from aiosmtpd.smtp import AuthResult, SMTP as Server

    seen = []

    class Upstream:
        async def handle_MAIL(self, server, session, envelope, address, options):
            if not session.authenticated:
                return "530 5.7.0 Authentication required"
            envelope.mail_from = address
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            seen.append((session.auth_data.login, envelope.mail_from))
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        return AuthResult(success=auth_data.password == PASSWORD.encode(), auth_data=auth_data)

    loop = asyncio.get_running_loop()
    upstream = await loop.create_server(lambda: Server(Upstream(), authenticator=authenticator,
                                                       auth_require_tls=False, loop=loop),
                                        "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    app = await start_app(make_config(tmp_path, f"smtp://127.0.0.1:{port}", upstream_auth="passthrough"))
    await add_user(app)
    await send(app.port("smtp"), simple_mail())
    await wait_status(app, 1, "sent")
    await app.stop()
    upstream.close()
    await upstream.wait_closed()
    assert seen == [(b"alice@example.com", "alice@example.com")]


async def test_trusted_networks_relay_without_auth_for_known_senders(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path, smtp_trusted_networks="127.0.0.0/8")
    await send(app.port("smtp"), simple_mail(), login=None)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as e:
        await send(app.port("smtp"), simple_mail(), login=None, sender="stranger@example.com")
    assert e.value.code == 550
    assert len(await sink.wait_for(1)) == 1


async def test_fifty_concurrent_clients(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path)
    mails = [simple_mail(subject=f"mail {i}") for i in range(50)]
    results = await asyncio.gather(*(send(app.port("smtp"), m) for m in mails))
    assert all(errors == {} for errors, _ in results)
    got = await sink.wait_for(50, timeout=30)
    assert sorted(m.data for m in got) == sorted(mails)


async def test_swaks_sends_through_the_relay(sink, start_app, tmp_path):
    swaks = require_tool("swaks")
    app = await relay_to(sink, start_app, tmp_path)
    proc = await asyncio.create_subprocess_exec(
        swaks, "--server", "127.0.0.1", "--port", str(app.port("smtp")), "--from", "alice@example.com",
        "--to", "bob@example.org", "--auth", "LOGIN", "--auth-user", "alice@example.com",
        "--auth-password", PASSWORD, "--header", "Subject: via swaks", "--body", "sent by swaks",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    [got] = await sink.wait_for(1)
    assert b"Subject: via swaks" in got.data and b"sent by swaks" in got.data


@pytest.mark.parametrize("path", corpus_files("mime", "*.eml"))
async def test_corpus_mail_passes_through_byte_identical(path, sink, start_app, tmp_path):
    if path is None:
        require_corpus()
    raw = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    raw = raw.replace(b"%FROM_ADDRESS%", b"alice@example.com").replace(b"%TO_ADDRESS%", b"bob@example.org")
    raw = raw.replace(b"%DATE%", b"Sun, 29 Nov 2026 09:00:00 +0000")
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    # the corpus comes from everyone: alice relays it as a shared mailbox would
    app = await relay_to(sink, start_app, tmp_path, smtp_from_check="off")
    await send(app.port("smtp"), raw)
    [got] = await sink.wait_for(1)
    assert got.data == raw


def test_line_ending_shortcut_matches_aiosmtplib():
    for m in (b"a\r\nb\r\n", b"a\nb\r\n", b"a\rb\r\n", b"\r\n\r\n", b"x", b"", b"a\r\n\r", b"\n\r\n"):
        assert crlf_everywhere(m) == aiosmtplib.protocol.normalize_message_line_endings(m), m


async def test_a_huge_mail_is_relayed_intact(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path)
    line = b"".join(bytes([65 + i % 26]) for i in range(76)) + b"\r\n"
    huge = simple_mail() + line * (20 * 1024 * 1024 // len(line))  # about 20 MB
    await send(app.port("smtp"), huge)
    [got] = await sink.wait_for(1, timeout=60)
    assert hashlib.sha256(got.data).hexdigest() == hashlib.sha256(huge).hexdigest()
    await wait_status(app, 1, "sent")
