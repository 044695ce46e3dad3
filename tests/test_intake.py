"""Intake end to end: what a mail's headers ask for, as every layer sees them, over real SMTP
into the relay and out to a real sink."""
from __future__ import annotations

import aiosmtplib
import dkim as dkimpy
import pytest

from conftest import relay_to
from test_dkim_e2e import DOMAIN, dns_for, keys, signature_domains, signing_relay  # noqa: F401 (keys: a fixture)
from test_smtp_limits import Raw
from test_smtp_relay import send, wait_status
from test_tracking_e2e import TOKEN, html_mail

CLICK = b"http://127.0.0.1:8080/c/"


def parts(data: bytes) -> tuple[bytes, bytes]:
    """(text part, HTML part) of html_mail's multipart/alternative, as sent."""
    _, text, html = data.split(b"--b1\r\n")[:3]
    return text, html


# Postmark's link values, as the relay honours them: HTML links are rewritten with text links
# or without; text links never alone (TextOnly asks to leave HTML links alone, so nothing is).
@pytest.mark.parametrize("value, html_links, text_links", [
    ("None", False, False), ("HtmlOnly", True, False), ("HtmlAndText", True, True), ("TextOnly", False, False)])
async def test_postmark_link_values_mark_what_is_tracked(value, html_links, text_links, sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path)
    headers = f"X-PM-TrackOpens: true\r\nX-PM-TrackLinks: {value}\r\n"
    await send(app.port("smtp"), html_mail(extra_headers=headers))
    [m] = await sink.wait_for(1)
    text, html = parts(m.data)
    assert TOKEN.search(m.data), "opens were asked for"
    assert (CLICK in html, CLICK in text) == (html_links, text_links), m.data.decode()
    row = await wait_status(app, 1, "sent")
    assert bool(row["track_clicks"]) == (html_links or text_links)


async def send_raw(port: int, data: bytes, rcpt: str = "bob@example.org") -> tuple[int, str]:
    """DATA with exactly these bytes, ending in CRLF (aiosmtplib would normalise them first)."""
    raw = await Raw.open(port)
    try:
        await raw.login()
        assert (await raw.cmd("MAIL FROM:<alice@example.com>"))[0] == 250
        assert (await raw.cmd(f"RCPT TO:<{rcpt}>"))[0] == 250
        assert (await raw.cmd("DATA"))[0] == 354
        raw.writer.write(data + b".\r\n")
        return await raw.reply()
    finally:
        await raw.close()


def head(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0] + b"\r\n"


@pytest.mark.parametrize("eol", [b"\r", b"\n"])
async def test_a_header_behind_a_bare_line_end_is_a_header_for_every_layer(eol, sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path)  # opt-in: only X-Track makes this tracked
    mail = html_mail(subject="x").replace(b"Subject: x\r\n", b"Subject: x" + eol + b"X-Track: on\r\n")
    code, text = await send_raw(app.port("smtp"), mail)
    assert code == 250, text
    [m] = await sink.wait_for(1)
    assert TOKEN.search(m.data), "the control reader did not see X-Track"
    assert b"X-Track" not in head(m.data), "a control header reached the recipient"
    # the upstream got the very header lines the control reader read and stripped
    assert head(m.data) == head(mail).replace(b"Subject: x" + eol + b"X-Track: on\r\n", b"Subject: x\r\n")


async def test_a_bare_cr_blank_line_ends_the_header_block_for_every_layer(sink, start_app, tmp_path):
    # "\r\r\n" is an empty line to a CRLF normaliser: what follows is body everywhere
    app = await relay_to(sink, start_app, tmp_path)
    mail = b"From: alice@example.com\r\nSubject: x\r\r\nX-Track: on\r\n\r\nhi\r\n"
    code, text = await send_raw(app.port("smtp"), mail)
    assert code == 250, text
    [m] = await sink.wait_for(1)
    assert m.data == b"From: alice@example.com\r\nSubject: x\r\n\r\nX-Track: on\r\n\r\nhi\r\n"
    row = await wait_status(app, 1, "sent")
    assert not row["track_opens"] and not row["track_clicks"]


def from_header(mail: bytes, value: bytes) -> bytes:
    return mail.replace(b"From: Alice <alice@example.com>\r\n", b"From: " + value + b"\r\n", 1)


FOREIGN = [b"CEO <ceo@example.com>", b'"alice@example.com" <ceo@example.com>',
           b"alice@example.com, ceo@example.com", b"Alice <alice@example.com>\r\nFrom: ceo@example.com",
           b"undisclosed:;", b"<>", b"(" * 5000 + b"alice@example.com", b"alice@example.com (unclosed"]


@pytest.mark.parametrize("value", FOREIGN)
async def test_a_header_from_the_user_does_not_own_is_refused_at_data(value, sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path)
    with pytest.raises(aiosmtplib.SMTPDataError) as e:
        await send(app.port("smtp"), from_header(html_mail(), value))
    assert e.value.code == 550 and e.value.message.startswith("5.7.1"), e.value
    assert "alice@example.com" in e.value.message  # says whose addresses are allowed
    assert app.handler.accepted == 0
    # the same mail with the user's own From goes through
    await send(app.port("smtp"), from_header(html_mail(), b'"Alice (CEO)" <Alice@Example.com>'))
    assert len(await sink.wait_for(1)) == 1


async def test_from_check_follows_sender_check_domain(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path, smtp_sender_check="domain")
    await send(app.port("smtp"), from_header(html_mail(), b"Sales <sales@example.com>"))
    with pytest.raises(aiosmtplib.SMTPDataError) as e:
        await send(app.port("smtp"), from_header(html_mail(), b"CEO <ceo@example.org>"))
    assert e.value.code == 550
    [m] = await sink.wait_for(1)
    assert b"From: Sales <sales@example.com>" in m.data


async def test_trusted_network_mail_has_the_same_from_rule(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path, smtp_trusted_networks="127.0.0.0/8")
    with pytest.raises(aiosmtplib.SMTPDataError) as e:
        await send(app.port("smtp"), from_header(html_mail(), b"CEO <ceo@example.com>"), login=None)
    assert e.value.code == 550
    await send(app.port("smtp"), html_mail(), login=None)
    assert len(await sink.wait_for(1)) == 1
    assert app.handler.accepted == 1


async def test_with_from_check_off_a_foreign_from_goes_out_unsigned(sink, start_app, tmp_path, keys):
    app = await signing_relay(sink, start_app, tmp_path, keys, smtp_from_check="off")
    tracked = html_mail(extra_headers="X-Track: on\r\n")
    await send(app.port("smtp"), from_header(tracked, b"Shared <team@example.com>"), rcpts=["bob@example.org"])
    await send(app.port("smtp"), tracked, rcpts=["carol@example.net"])
    got = {m.rcpt_tos[0]: m.data for m in await sink.wait_for(2)}
    shared, own = got["bob@example.org"], got["carol@example.net"]
    assert TOKEN.search(shared) and TOKEN.search(own), "both copies are tracked"
    assert signature_domains(shared) == [], "a From the user does not own was signed"
    assert signature_domains(own) == [DOMAIN] and dkimpy.verify(own, dnsfunc=dns_for(keys))
