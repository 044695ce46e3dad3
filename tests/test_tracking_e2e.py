"""Tracking end to end over SMTP: per-recipient copies, control headers, sticky defaults, DKIM."""
from __future__ import annotations

import re
from email import message_from_bytes
from email.header import decode_header, make_header
from email.policy import compat32

import aiohttp

from conftest import both_engines, relay_to
from relay.policy import UserPolicy
from test_smtp_relay import send, wait_status

pytestmark = both_engines  # SMTP in, rewrite, delivery and the store's tracking rows on both engines
TOKEN = re.compile(rb"/o/([A-Za-z0-9_-]+)\.gif")


def html_mail(subject: str = "Offer", extra_headers: str = "", links: str = "") -> bytes:
    links = links or ('<a href="https://shop.example/item?id=7&amp;ref=mail">item</a> '
                      '<a href="https://Example.COM:443/a%7Eb?x=1&y=%2F#frag">odd</a> '
                      '<a href="mailto:sales@example.com">mail us</a>')
    return (
        "From: Alice <alice@example.com>\r\nTo: Bob <bob@example.org>\r\nCc: carol@example.net\r\n"
        f"Subject: {subject}\r\nMessage-ID: <offer-1@example.com>\r\n{extra_headers}"
        "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n"
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee https://shop.example/item\r\n"
        "--b1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        f"<html><body><p>Hello</p>{links}</body></html>\r\n--b1--\r\n"
    ).encode()


def decoded_html(data: bytes) -> str:
    msg = message_from_bytes(data, policy=compat32)
    for part in msg.walk():
        if part.get_content_type() == "text/html":
            return part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8")
    raise AssertionError("no html part")


async def test_to_cc_bcc_each_get_their_own_copy(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path)
    rcpts = ["bob@example.org", "carol@example.net", "dave@example.info"]  # dave is Bcc
    await send(app.port("smtp"), html_mail(extra_headers="X-Track: on\r\n"), rcpts=rcpts)
    got = await sink.wait_for(3)
    assert sorted(r for m in got for r in m.rcpt_tos) == sorted(rcpts)
    assert all(len(m.rcpt_tos) == 1 for m in got)
    tokens = {m.rcpt_tos[0]: TOKEN.search(m.data).group(1) for m in got}
    assert len(set(tokens.values())) == 3 and all(len(t) >= 22 for t in tokens.values())
    for m in got:
        assert b"X-Track" not in m.data  # control header stripped
        assert message_from_bytes(m.data)["Message-ID"] == "<offer-1@example.com>"
        html = decoded_html(m.data)
        token = tokens[m.rcpt_tos[0]].decode()
        assert f'href="http://127.0.0.1:8080/c/{token}/0"' in html
        assert 'href="mailto:sales@example.com"' in html
        assert html.count("/o/") == 1
    row = await wait_status(app, 1, "sent")
    assert row["track_opens"] and row["track_clicks"]


async def test_clicks_redirect_to_the_exact_original(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path)
    # mail carries the configured public URL (:8080); the test asks the hits server on its real port
    public = f"http://127.0.0.1:{app.port('hits')}"
    await send(app.port("smtp"), html_mail(extra_headers="X-Track: on\r\n"), rcpts=["bob@example.org"])
    [m] = await sink.wait_for(1)
    urls = re.findall(r'href="http://127\.0\.0\.1:8080(/c/[^"]+)"', decoded_html(m.data))
    assert len(urls) == 2
    expected = ["https://shop.example/item?id=7&ref=mail", "https://Example.COM:443/a%7Eb?x=1&y=%2F#frag"]
    async with aiohttp.ClientSession() as http:
        for path, want in zip(urls, expected):
            async with http.get(public + path, allow_redirects=False) as resp:
                assert resp.status == 302
                assert resp.headers["Location"] == want
        async with http.get(public + urls[0][:-1] + "9", allow_redirects=False) as resp:
            assert resp.status == 404


async def test_untracked_recipients_get_the_original_bytes(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path)
    data = html_mail()
    await send(app.port("smtp"), data, rcpts=["bob@example.org", "colleague@example.com"])
    got = await sink.wait_for(1)
    assert got[0].data == data and sorted(got[0].rcpt_tos) == ["bob@example.org", "colleague@example.com"]


async def test_internal_recipients_are_not_tracked(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path)
    await send(app.port("smtp"), html_mail(extra_headers="X-Track: on\r\n"),
               rcpts=["bob@example.org", "colleague@example.com"])
    got = await sink.wait_for(2)
    by_rcpt = {m.rcpt_tos[0]: m.data for m in got}
    assert TOKEN.search(by_rcpt["bob@example.org"])
    assert not TOKEN.search(by_rcpt["colleague@example.com"])
    assert b"X-Track" not in by_rcpt["colleague@example.com"]


async def test_above_max_split_one_shared_copy(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path, tracking_max_split="2")
    rcpts = [f"r{i}@example.org" for i in range(3)]
    await send(app.port("smtp"), html_mail(extra_headers="X-Track: on\r\n"), rcpts=rcpts)
    [m] = await sink.wait_for(1)
    assert sorted(m.rcpt_tos) == rcpts and TOKEN.search(m.data)


async def test_subject_tags_in_encoded_words_are_removed(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path)
    utf8 = "=?UTF-8?B?" + __import__("base64").b64encode("[track] Grüße aus Köln".encode()).decode() + "?="
    latin2 = "=?ISO-8859-2?Q?=5Btrack=5D_Pozdrawiam_=B1=EA?="
    for i, subject in enumerate((utf8, latin2)):
        await send(app.port("smtp"), html_mail(subject=subject), rcpts=[f"bob{i}@example.org"])
    got = await sink.wait_for(2)
    subjects = sorted(str(make_header(decode_header(message_from_bytes(m.data)["Subject"]))) for m in got)
    assert subjects == ["Grüße aus Köln", "Pozdrawiam ąę"]
    assert all(TOKEN.search(m.data) for m in got)


async def test_sticky_choice_becomes_the_default(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path)
    await send(app.port("smtp"), html_mail(subject="[track] first"), rcpts=["bob@example.org"])
    await send(app.port("smtp"), html_mail(subject="second"), rcpts=["bob@example.org"])
    got = await sink.wait_for(2)
    assert all(TOKEN.search(m.data) for m in got)
    policy = await app.store.policy(1)
    assert policy.sticky_choice is not None and policy.sticky_choice.opens
    await send(app.port("smtp"), html_mail(subject="[notrack] third"), rcpts=["bob@example.org"])
    await send(app.port("smtp"), html_mail(subject="fourth"), rcpts=["bob@example.org"])
    got = await sink.wait_for(4)
    assert not any(TOKEN.search(m.data) for m in got[2:])


async def test_policy_off_beats_the_header(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path)
    await app.store.set_policy(1, UserPolicy(mode="off"))
    await send(app.port("smtp"), html_mail(extra_headers="X-Track: on\r\n"), rcpts=["bob@example.org"])
    [m] = await sink.wait_for(1)
    assert not TOKEN.search(m.data) and b"X-Track" not in m.data


async def test_hosted_sender_aliases(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path)
    await send(app.port("smtp"), html_mail(extra_headers="X-Mailgun-Track-Opens: yes\r\nX-Mailgun-Track-Clicks: no\r\n"),
               rcpts=["bob@example.org"])
    await send(app.port("smtp"), html_mail(extra_headers="X-PM-TrackOpens: false\r\nX-PM-TrackLinks: HtmlOnly\r\n"),
               rcpts=["carol@example.org"])
    got = {m.rcpt_tos[0]: m.data for m in await sink.wait_for(2)}
    bob, carol = decoded_html(got["bob@example.org"]), decoded_html(got["carol@example.org"])
    assert "/o/" in bob and "/c/" not in bob
    assert "/o/" not in carol and "/c/" in carol
    assert all(b"X-Mailgun" not in d and b"X-PM-" not in d for d in got.values())


async def test_a_client_signed_message_is_left_intact(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path)
    signed = html_mail(extra_headers="X-Track: on\r\n").replace(
        b"From:", b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s1; h=from:to; bh=abc=; b=def=\r\nFrom:", 1)
    await send(app.port("smtp"), signed, rcpts=["bob@example.org"])
    [m] = await sink.wait_for(1)
    assert m.data == signed.replace(b"X-Track: on\r\n", b"")
    row = await wait_status(app, 1, "sent")
    assert row["rewrite_note"] == "dkim-signed"


async def test_a_rewrite_past_its_deadline_delivers_the_mail_untracked(sink, start_app, tmp_path):
    # a 1 ms deadline for a legal 3 MB HTML part: no worker rewrites that in time
    app = await relay_to(sink, start_app, tmp_path, tracking_rewrite_timeout="1ms", tracking_rewrite_processes="1")
    links = '<p><a href="https://shop.example/item?id=7">item</a></p>\r\n' * 50_000
    mail = html_mail(extra_headers="X-Track: on\r\n", links=links)
    await send(app.port("smtp"), mail, rcpts=["bob@example.org"])
    [m] = await sink.wait_for(1)
    assert m.data == mail.replace(b"X-Track: on\r\n", b"")
    row = await wait_status(app, 1, "sent")
    assert row["rewrite_note"] == "rewrite took longer than 0.001s"
