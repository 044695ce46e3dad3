"""The disclosure and the opt-out link end to end: the relay started for real, a real upstream
sink, real HTTP clients on the hits server."""
from __future__ import annotations

import re
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default

import aiohttp

from conftest import both_engines
from hits_helpers import THUNDERBIRD, deliver_tracked, local, send, start_relay, tracked_mail
from relay.config import PrivacyConfig
from relay.privacy import privacy_report
from relay.records import PrivacyRecord

DISCLOSURE = "Ce courriel est suivi — ouvertures et clics."
DISCLOSURE_HTML = '<p>Tracked by <b>ACME</b>, see <a href="https://acme.example/privacy">privacy</a>.</p>'
OPTOUT_LINE = re.compile(r"This message is tracked by 127\.0\.0\.1\. Stop tracking: (http://\S+/p/[A-Za-z0-9_-]+)")


def parsed(data: bytes) -> EmailMessage:
    return BytesParser(policy=default).parsebytes(data)  # type: ignore[return-value]


def optout_url(data: bytes) -> str:
    """The opt-out link of a delivered copy, read from its text part; the HTML part's must match."""
    msg = parsed(data)
    [url] = OPTOUT_LINE.findall(msg.get_body(("plain",)).get_content())
    html = msg.get_body(("html",)).get_content()
    assert html.count(f'<a href="{url}" style="color:#666666;">Stop tracking</a>') == 1, html
    return url


def mail(sender: str, rcpts: list[str]) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, ", ".join(rcpts), "Numbers"
    msg["X-Track"] = "on"
    msg.set_content("Grüße,\n\nsee https://example.org/numbers\n", cte="base64")
    msg.add_alternative('<html><body><p>Grüße, <a href="https://example.org/numbers">numbers</a></p></body></html>\n',
                        subtype="html", cte="quoted-printable")
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def dnt(app) -> list[tuple[str, str]]:
    return [(r.entry, r.source) for r in await app.store.privacy_records("dnt")]


async def optouts(app, outcome: str) -> float:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{app.port('admin')}/metrics") as resp:
            text = await resp.text()
    m = re.search(rf'^trackrelay_optouts_total{{outcome="{outcome}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


@both_engines
async def test_the_disclosure_is_in_each_part_of_tracked_copies_once_and_in_untracked_ones_not_at_all(
        sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink, privacy_disclosure_text=DISCLOSURE,
                            privacy_disclosure_html=DISCLOSURE_HTML)
    rcpts = ["bob@example.org", "carol@example.com"]  # carol is in the sender's own domain: untracked
    sent = mail("alice@example.com", rcpts)
    await send(app.port("smtp"), sent, "alice@example.com", rcpts)
    got = {r.rcpt_tos[0]: r.data for r in await sink.wait_for(2)}

    tracked = parsed(got["bob@example.org"])
    text_part, html_part = tracked.get_body(("plain",)), tracked.get_body(("html",))
    # each part kept its charset and transfer encoding, and decodes to the notice at its end
    assert (text_part.get_content_charset(), text_part["Content-Transfer-Encoding"]) == ("utf-8", "base64")
    assert (html_part.get_content_charset(), html_part["Content-Transfer-Encoding"]) == ("utf-8", "quoted-printable")
    # inside base64 the text kept its own line breaks (LF), and so does the notice
    assert text_part.get_content() == f"Grüße,\n\nsee https://example.org/numbers\n\n{DISCLOSURE}\n"
    html = html_part.get_content()
    assert html.count(DISCLOSURE_HTML) == 1 and DISCLOSURE not in html  # the HTML one, for HTML
    # before </body>, after the mail's own content; its own link is not tracked
    assert html.index("numbers</a></p>") < html.index(DISCLOSURE_HTML) < html.index("/o/") < html.index("</body>")
    assert b"/p/" not in got["bob@example.org"]  # no opt-out link unless asked for

    untracked = got["carol@example.com"]
    assert b"ACME" not in untracked and b"/o/" not in untracked and b"/c/" not in untracked
    boundary = parsed(sent).get_boundary().encode()
    assert untracked.split(boundary)[1:] == sent.split(boundary)[1:]  # every part byte for byte


async def test_a_mail_whose_html_part_cannot_be_read_still_goes_out_with_the_text_disclosure(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink, privacy_disclosure_text="Tracked by ACME.")
    html = b'--b1\r\nContent-Type: text/html; charset=x-no-such-charset\r\n\r\n<p>\xff <a href="https://x.example/">x</a></p>\r\n'
    sent = (b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: odd\r\nX-Track: on\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
            b"--b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nHello\r\n" + html + b"--b1--\r\n")
    await send(app.port("smtp"), sent, "alice@example.com", ["bob@example.org"])
    [received] = await sink.wait_for(1)
    assert html in received.data  # left as it was
    assert received.data.split(b"--b1")[1] == (
        b"\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nHello\r\n\r\nTracked by ACME.\r\n")  # that \r\n: the delimiter's


@both_engines
async def test_the_opt_out_link_shows_a_page_on_get_and_head_and_stops_tracking_on_post(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink, privacy_optout_link="true")
    await deliver_tracked(app, sink)
    url = local(app, optout_url(sink.messages[-1].data))
    async with aiohttp.ClientSession(headers={"User-Agent": THUNDERBIRD}) as s:
        for method in ("GET", "HEAD", "GET"):  # a link scanner, a prefetch, a person: nothing changes
            async with s.request(method, url) as resp:
                page = await resp.text()
                assert resp.status == 200 and resp.headers["Content-Type"] == "text/html; charset=utf-8"
                assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
                assert resp.headers["Referrer-Policy"] == "no-referrer"
                if method == "GET":
                    assert '<form method="post"><button type="submit">Stop tracking me</button></form>' in page
                    assert "<script" not in page and "http" not in page.split("<body>")[1]  # nothing remote
        assert await dnt(app) == []
        async with s.post(url, data={}) as resp:
            assert resp.status == 200 and "no longer be tracked" in await resp.text()
        assert await dnt(app) == [("bob@example.org", "link")]
        async with s.post(url, data={}) as resp:  # again: nothing new
            assert resp.status == 200
    assert await dnt(app) == [("bob@example.org", "link")]
    assert (await optouts(app, "added"), await optouts(app, "already")) == (1, 1)

    # the next mail to bob goes out untracked, though it asks for tracking
    sent = tracked_mail("alice@example.com", ["bob@example.org"])
    await send(app.port("smtp"), sent, "alice@example.com", ["bob@example.org"])
    [*_, received] = await sink.wait_for(2)
    assert b"/o/" not in received.data and b"/c/" not in received.data and b"/p/" not in received.data


@both_engines
async def test_a_shared_copy_needs_the_address_of_one_of_its_recipients(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink, privacy_optout_link="true", tracking_max_split="1")
    rcpts = ["bob@example.org", "carol@example.org"]
    await send(app.port("smtp"), tracked_mail("alice@example.com", rcpts), "alice@example.com", rcpts)
    [received] = await sink.wait_for(1)
    assert received.rcpt_tos == rcpts  # one copy for both
    url = local(app, optout_url(received.data))
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as resp:
            assert '<input type="email" id="email" name="email" required' in await resp.text()
        async with s.post(url, data={"email": ""}) as resp:
            assert resp.status == 400 and "Please enter your email address." in await resp.text()
        async with s.post(url, data={"email": "mallory@example.org"}) as resp:  # not a recipient
            page = await resp.text()
            assert resp.status == 200 and "If mallory@example.org is one of this message" in page
        assert await dnt(app) == [] and await optouts(app, "no_match") == 1
        async with s.post(url, data={"email": "<b>x</b>@example.org"}) as resp:
            assert "If &lt;b&gt;x&lt;/b&gt;@example.org is" in await resp.text()  # escaped
        async with s.post(url, data={"email": " Carol@Example.org "}) as resp:
            assert resp.status == 200 and "If Carol@Example.org is one of" in await resp.text()
    assert await dnt(app) == [("carol@example.org", "link")]


async def test_unknown_tokens_other_methods_cross_site_posts_and_big_bodies_are_refused(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink, privacy_optout_link="true")
    await deliver_tracked(app, sink)
    url = local(app, optout_url(sink.messages[-1].data))
    base = url.rsplit("/", 1)[0]
    async with aiohttp.ClientSession() as s:
        for bad in (f"{base}/{'A' * 24}", f"{base}/short", f"{base}/{'A' * 24}/x", f"{base}/"):
            for method in ("GET", "POST"):
                async with s.request(method, bad, data={} if method == "POST" else None) as resp:
                    page = await resp.text()
                    assert resp.status == 404 and "Link not found" in page and "form" not in page, (method, bad)
        async with s.put(url, data={}) as resp:
            assert resp.status == 405 and resp.headers["Allow"] == "GET, HEAD, POST"
        for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                        {"Origin": "http://evil.example"}, {"Origin": "null"}):
            async with s.post(url, data={}, headers=headers) as resp:
                assert resp.status == 403, headers
        async with s.post(url, data={"email": "x" * 5000}) as resp:
            assert resp.status == 413
        assert await dnt(app) == [] and await optouts(app, "refused") == 4
        # the page's own origin, as a browser sends it, is fine
        async with s.post(url, data={}, headers={"Origin": base.rsplit("/", 1)[0]}) as resp:
            assert resp.status == 200
    assert await dnt(app) == [("bob@example.org", "link")]


def test_the_privacy_report_says_what_tracked_copies_tell_and_who_opted_out_with_the_link():
    dnt = [PrivacyRecord("bob@example.org", 1.0, "", "link"), PrivacyRecord("carol@example.org", 1.0, "", "cli")]
    report = privacy_report(PrivacyConfig(optout_link=True, disclosure_html="<p>Tracked.</p>"), dnt=dnt,
                            consented=0, due=None)
    assert "Tracked copies say so: a disclosure, an opt-out link; 1 addresses opted out with the link" in report
    assert "Tracked copies say so: no disclosure, no opt-out link; 0 addresses" in privacy_report(
        PrivacyConfig(), dnt=[], consented=0, due=None)
