"""The notice of tracked copies: its text and HTML forms, the config that refuses what mail
could not carry, and where the rewriter puts it (no servers)."""
from __future__ import annotations

import base64
import email.policy
import os
import quopri
import secrets
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from corpus import corpus_files
from relay import config
from relay.errors import ConfigError
from relay.notice import copy_notice, problem
from relay.rewrite import RewritePlan, rewrite_copies, rewrite_message
from test_rewrite import decoded_text, leaves, load_mime, parse

DISCLOSURE = "Ce courriel est suivi : ouvertures et clics. « Vie privée »"  # all in Latin-1
URL = "https://t.example/p/TOKEN"


def notice_plans(n: int, *, disclosure_text: str = DISCLOSURE, disclosure_html: str = "",
                 text_links: bool = False) -> list[RewritePlan]:
    """Plans of n copies of one message as delivery makes them, each with its own opt-out URL."""
    plans = []
    for token in [secrets.token_urlsafe(18) for _ in range(n)]:
        notice = copy_notice(disclosure_text=disclosure_text, disclosure_html=disclosure_html,
                             optout_url=f"https://t.example/p/{token}", relay="t.example")
        plans.append(RewritePlan(
            opens=True, clicks=True, text_links=text_links, pixel_url=f"https://t.example/o/{token}.gif",
            click_base=f"https://t.example/c/{token}/", own_prefix="https://t.example", allow_dkim_signed=True,
            token=token, notice_text=notice.text, notice_html=notice.html))
    return plans


def message(*, text: bytes, text_header: str, html: bytes, html_header: str, crlf: bool = True) -> bytes:
    raw = (b'From: a@shop.example\nTo: b@example.org\nSubject: t\nMIME-Version: 1.0\n'
           b'Content-Type: multipart/alternative; boundary="b1"\n\n--b1\n' + text_header.encode() + b"\n\n" + text
           + b"\n--b1\n" + html_header.encode() + b"\n\n" + html + b"\n--b1--\n")
    return raw.replace(b"\n", b"\r\n") if crlf else raw


# ---------------------------------------------------------------- the notice itself


def test_the_opt_out_line_and_the_disclosure_in_both_forms_everything_escaped() -> None:
    notice = copy_notice(disclosure_text="Tracked <b>by</b> us & co\r\nsecond line", disclosure_html="",
                         optout_url='https://t.example/p/T?"x"', relay="t.<example>")
    assert notice.text == ("Tracked <b>by</b> us & co\nsecond line\n"
                           'This message is tracked by t.<example>. Stop tracking: https://t.example/p/T?"x"')
    assert "\nTracked &lt;b&gt;by&lt;/b&gt; us &amp; co<br>\nsecond line\n</div>" in notice.html
    assert "tracked by t.&lt;example&gt;." in notice.html
    assert '<a href="https://t.example/p/T?&quot;x&quot;"' in notice.html and ">Stop tracking</a>" in notice.html


def test_the_html_form_is_ascii_and_the_html_disclosure_wins_for_html_parts() -> None:
    notice = copy_notice(disclosure_text="Suivi — texte", disclosure_html="<p>Suivi — <b>HTML</b></p>",
                         optout_url="", relay="t.example")
    assert notice.text == "Suivi — texte"
    assert "<p>Suivi &#8212; <b>HTML</b></p>" in notice.html and notice.html.isascii()
    assert "Stop tracking" not in notice.text + notice.html  # no opt-out link asked for
    assert not copy_notice(disclosure_text="  ", disclosure_html="", optout_url="", relay="x")


@pytest.mark.parametrize(("text", "html", "key", "why"), [
    ("a\x00b", "", "privacy.disclosure_text", "control characters"),
    ("", "<p>\x1b[31m</p>", "privacy.disclosure_html", "control characters"),
    ("x" * 901, "", "privacy.disclosure_text", "line 1 is 901 bytes long"),
    ("ok\n" + "é" * 500, "", "privacy.disclosure_text", "line 2 is 1000 bytes long"),
    ("", "<p>" + "é" * 200 + "</p>", "privacy.disclosure_html", "bytes long"),  # as character references
    ("", "<p>Tracked <!-- by", "privacy.disclosure_html", "unterminated markup"),
    ("", '<a href="https://x.example/>here</a>', "privacy.disclosure_html", "unterminated markup"),
    ("", "<style>p{}</style>", "privacy.disclosure_html", "<style> tags are not allowed"),
    ("", "<script>alert(1)</script>", "privacy.disclosure_html", "<script> tags are not allowed"),
    ("", "x</body></html>", "privacy.disclosure_html", "<body> tags are not allowed"),
])
def test_what_mail_could_not_carry_is_refused(text: str, html: str, key: str, why: str) -> None:
    found = problem(text, html)
    assert found is not None and found[0] == key and why in found[1], found


def test_ordinary_disclosures_pass() -> None:
    assert problem("Tracked by ACME.\nSee https://acme.example/privacy\tthanks", "") is None
    assert problem("", '<p>Tracked by <a href="https://acme.example/privacy?a=1&amp;b=2">ACME</a> — AT&T</p>') is None
    assert problem("x" * 900, "") is None
    # the HTML made from the text is checked too: escaped, it grows
    assert problem("&" * 900, "") == ("privacy.disclosure_text", "line 1 is 4500 bytes long in mail (at most 900): "
                                                                  "break it into shorter lines")


@pytest.mark.parametrize(("env", "key"), [
    ({"TRACKRELAY_PRIVACY_DISCLOSURE_HTML": "<p>open <!-- comment"}, "privacy.disclosure_html"),
    ({"TRACKRELAY_PRIVACY_DISCLOSURE_TEXT": "bell\x07"}, "privacy.disclosure_text"),
    ({"TRACKRELAY_PRIVACY_OPTOUT_LINK": "maybe"}, "privacy.optout_link"),
])
def test_config_refuses_bad_values_naming_the_key(env: dict, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.load(None, env)
    assert str(e.value).startswith(f"{key}: ")


def test_check_config_refuses_a_bad_disclosure_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    env["TRACKRELAY_PRIVACY_DISCLOSURE_HTML"] = '<p>Tracked, see <a href="https://acme.example/>our policy</a>'
    env["TRACKRELAY_STORE_URL"] = f"sqlite:///{tmp_path}/never.db"
    out = subprocess.run([str(Path(sys.executable).parent / "trackrelay"), "check-config"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("trackrelay: privacy.disclosure_html: unterminated markup at '<a href=")


def test_config_reads_the_keys_from_a_file(tmp_path: Path) -> None:
    f = tmp_path / "t.toml"
    f.write_text('[privacy]\noptout_link = true\ndisclosure_text = """Tracked.\nSee our policy."""\n'
                 "disclosure_html = '<p>Tracked.</p>'\n")
    cfg = config.load(f, {})
    assert cfg.privacy.optout_link and cfg.privacy.disclosure_text == "Tracked.\nSee our policy."
    assert cfg.privacy.disclosure_html == "<p>Tracked.</p>"
    assert config.load(None, {}).privacy.optout_link is False  # off unless asked for


# ---------------------------------------------------------------- where the rewriter puts it


@pytest.mark.parametrize("crlf", [True, False])
@pytest.mark.parametrize(("text_cte", "html_cte", "charset"), [
    ("base64", "quoted-printable", "utf-8"),
    ("quoted-printable", "base64", "utf-8"),
    ("8bit", "8bit", "utf-8"),
    ("8bit", "quoted-printable", "iso-8859-1"),
])
def test_each_part_gets_the_notice_once_in_its_own_charset_and_encoding(
        text_cte: str, html_cte: str, charset: str, crlf: bool) -> None:
    def encode(text: str, cte: str) -> bytes:
        data = text.encode(charset, "xmlcharrefreplace")
        if cte == "base64":  # the message's line breaks become CRLF below, but not inside base64
            return base64.encodebytes(data.replace(b"\n", b"\r\n") if crlf else data).rstrip(b"\n")
        return quopri.encodestring(data) if cte == "quoted-printable" else data

    header = f"Content-Type: text/{{}}; charset={charset}\nContent-Transfer-Encoding: {{}}"
    raw = message(text=encode("Grüße,\nsee https://shop.example/x\n", text_cte), text_header=header.format("plain", text_cte),
                  html=encode("<html><body><p>Grüße</p>\n<a href='https://shop.example/y'>y</a></body></html>\n",
                              html_cte),
                  html_header=header.format("html", html_cte), crlf=crlf)
    [plan] = notice_plans(1)
    result = rewrite_message(raw, plan)
    assert result.skipped is None and result.notices == 2 and result.pixel
    msg = parse(result.data)
    [text_part, html_part] = [part for _, part, _ in leaves(msg, text_parts=True)]
    for part, cte in ((text_part, text_cte), (html_part, html_cte)):
        assert part.get_content_charset() == charset and part["Content-Transfer-Encoding"] == cte
    text, html = decoded_text(text_part), decoded_text(html_part)
    newline = "\r\n" if crlf else "\n"
    assert text == (f"Grüße,{newline}see https://shop.example/x{newline}{newline}{DISCLOSURE}{newline}"
                    f"This message is tracked by t.example. Stop tracking: https://t.example/p/{plan.token}{newline}")
    # in HTML just before </body>, then the pixel; the disclosure as character references
    assert html.count("Ce courriel est suivi : ouvertures et clics. &#171; Vie priv&#233;e &#187;") == 1
    assert html.count(f'href="https://t.example/p/{plan.token}"') == 1
    before, _, after = html.partition(f"{newline}<div ")
    assert before == "<html><body><p>Grüße</p>" + newline + f"<a href='https://t.example/c/{plan.token}/0'>y</a>"
    assert after.endswith(f"</div>{newline}" + '<img src="https://t.example/o/' + plan.token
                          + '.gif" width="1" height="1" alt="" border="0" '
                          'style="display:none;width:1px;height:1px;border:0;margin:0;padding:0;" />'
                          f"</body></html>{newline}")
    assert html.count("<div ") == 2 and html.count(DISCLOSURE[:10]) == 1  # disclosure and opt-out line, once each
    assert email.message_from_bytes(result.data, policy=email.policy.default).get_body(("html",)) is not None


def test_a_part_that_cannot_carry_the_notice_goes_without_it_and_the_rest_is_tracked() -> None:
    raw = message(text=b"Hello, see https://shop.example/x\n", text_header="Content-Type: text/plain; charset=us-ascii",
                  html=b"<p><a href='https://shop.example/y'>y</a></p>\n",
                  html_header="Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 7bit")
    [plan] = notice_plans(1, text_links=True)  # a disclosure in French: not ASCII
    result = rewrite_message(raw, plan)
    assert result.skipped == "notice left out of part 1.1: not writable in its charset us-ascii"
    assert result.notices == 1 and len(result.links) == 2  # the text part's link is tracked all the same
    [text_part, html_part] = [part for _, part, _ in leaves(parse(result.data), text_parts=True)]
    assert "suivi" not in decoded_text(text_part) and plan.click_base in decoded_text(text_part)
    assert "&#171; Vie priv&#233;e &#187;" in decoded_text(html_part)  # 7bit HTML carries it as references
    # a 7bit text part in UTF-8 cannot take 8-bit text either
    raw = raw.replace(b"charset=us-ascii", b"charset=utf-8\r\nContent-Transfer-Encoding: 7bit")
    assert "not ASCII, and the part is 7bit" in rewrite_message(raw, plan).skipped


def test_an_html_part_that_cannot_be_read_goes_out_as_it_was_and_the_mail_goes_out() -> None:
    raw = message(text=b"Hello\n", text_header="Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit",
                  html=b"<p>\xff</p>\n", html_header="Content-Type: text/html; charset=x-unknown")
    [plan] = notice_plans(1)
    result = rewrite_message(raw, plan)
    assert result.skipped == "unknown charset x-unknown in part 1.2" and result.notices == 1
    html_before = raw.split(b"--b1")[2]
    assert result.data.split(b"--b1")[2] == html_before  # byte for byte
    assert DISCLOSURE.encode() in result.data.split(b"--b1")[1]


@pytest.mark.parametrize("path", corpus_files("mime", "*.eml"))
def test_corpus_copies_with_notices_rewritten_once_equal_copies_rewritten_alone(path: Path | None) -> None:
    raw = load_mime(path, "crlf")
    plans = notice_plans(3, disclosure_html="<p>Tracked by <b>ACME</b>.</p>", text_links=True)
    results = rewrite_copies(raw, plans)
    assert results == [rewrite_message(raw, plan) for plan in plans]
    for plan, result in zip(plans, results):
        if result.data == raw:
            continue
        changed = [part for _, part, may in leaves(parse(result.data), text_parts=True) if may]
        notices = [decoded_text(part).count(f"/p/{plan.token}") for part in changed]
        assert sum(notices) == result.notices and set(notices) <= {0, 1}


def test_untracked_plans_get_no_notice() -> None:
    raw = message(text=b"Hello\n", text_header="Content-Type: text/plain", html=b"<p>x</p>\n",
                  html_header="Content-Type: text/html")
    [plan] = notice_plans(1)
    assert rewrite_message(raw, replace(plan, opens=False, clicks=False)).data is raw
