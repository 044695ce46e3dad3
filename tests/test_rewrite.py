"""relay.rewrite: corpus properties, generated documents and messages, hand-written cases.

The expectations come from outside the module under test: the stdlib HTML tokenizer
(conditional comments fed to it again), the stdlib MIME parser under both policies,
the corpus manifest, and documents whose expected output is known by construction.
"""
from __future__ import annotations

import base64
import codecs
import email
import email.policy
import hashlib
import html
import quopri
import re
import secrets
from dataclasses import replace
from email.message import Message
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corpus import corpus_files, manifest, require_corpus
from relay.rewrite import Link, RewritePlan, RewriteResult, _stamper, rewrite_copies, rewrite_html, rewrite_message
from relay.rewrite_html import clean_url

FIXTURES = Path(__file__).parent / "fixtures"
PLAN = RewritePlan(
    opens=True,
    clicks=True,
    pixel_url="http://t.example/o/PIXEL.gif",
    click_base="http://t.example/c/TOKEN/",
    own_prefix="http://t.example",
)
OTHER_TOKENS = replace(PLAN, pixel_url="http://t.example/o/OTHER.gif", click_base="http://t.example/c/OTHER/")
SIGNED_OK = replace(PLAN, allow_dkim_signed=True)
UNSUBSCRIBE = re.compile(r"unsub|leiratkoz|\bopt[\s_-]?out\b", re.I)
TEMPLATE = re.compile(r"\{\{|\}\}|\{%|%\}|\$\{|\*\||\|\*|<%|%>")
HTTP = re.compile(r"https?://", re.I)
BARE_LF = re.compile(rb"(?<!\r)\n")


# ---------------------------------------------------------------- helpers


class _Links(HTMLParser):
    """The stdlib tokenizer's view of a document's links, conditional comments included."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[dict] = []
        self._open: dict | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("a", "area") or tag.startswith("v:"):
            values = dict(reversed(attrs))  # the first of repeated attributes wins
            entry = {
                "tag": tag,
                "href": values.get("href"),
                "text": (values.get("alt") or "") if tag == "area" else "",
                "notrack": "data-notrack" in values,
            }
            self.links.append(entry)
            self._open = None if tag == "area" else entry

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" or tag.startswith("v:"):
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open["text"] += data

    def handle_comment(self, data: str) -> None:
        if data.lstrip().lower().startswith("[if"):  # Outlook renders these; parse them too
            self.links += tokenizer_links(data)


def tokenizer_links(doc: str) -> list[dict]:
    parser = _Links()
    parser.feed(doc)
    parser.close()
    return parser.links


def browser_url(href: str) -> str:
    return re.sub(r"[\t\n\r]", "", href.strip(" \t\n\r\f"))


def expected_urls(doc: str, plan: RewritePlan = PLAN, unsubscribe: frozenset[str] = frozenset()) -> list[str]:
    """The http(s) links the rules say to track, from the stdlib tokenizer's view."""
    urls = []
    for link in tokenizer_links(doc):
        url = browser_url(link["href"] or "")
        if not HTTP.match(url) or link["notrack"] or url.startswith(plan.own_prefix + "/"):
            continue
        if TEMPLATE.search(url) or url in unsubscribe or UNSUBSCRIBE.search(url) or UNSUBSCRIBE.search(link["text"]):
            continue
        urls.append(url)
    return urls


def pixel_pattern(plan: RewritePlan) -> re.Pattern[str]:
    return re.compile(r'<img src="' + re.escape(plan.pixel_url) + r'"[^>]*>')


def undo(original: str, rewritten: str, links: tuple[Link, ...], plan: RewritePlan = PLAN,
         decode: Callable[[str], str] = lambda value: browser_url(html.unescape(value))) -> str:
    """Rebuild the input from the output: drop the pixel, put each href's original text back.

    Each original value is read from the input up to its closing quote (or the end of an
    unquoted value) and must decode to the link's URL; every other character must match.
    """
    without_pixel, pixels = pixel_pattern(plan).subn("", rewritten)
    assert pixels <= 1
    pieces = without_pixel.split(plan.click_base)
    assert len(pieces) == len(links) + 1
    assert original.startswith(pieces[0])
    pos, rebuilt = len(pieces[0]), [pieces[0]]
    for link, piece in zip(links, pieces[1:]):
        number = re.match(r"\d+", piece).group()
        assert int(number) == link.position
        rest = piece[len(number):]
        if rest[:1] in ('"', "'") and rest[:1]:
            end = original.index(rest[0], pos)
        else:
            end = re.compile(r"[\t\n\f\r >]|\Z").search(original, pos).start()
        value = original[pos:end]
        assert decode(value) == link.url
        assert original.startswith(rest, end)
        rebuilt += [value, rest]
        pos = end + len(rest)
    assert pos == len(original)
    return "".join(rebuilt)


def read_html(path: Path) -> str:
    return path.read_bytes().decode("latin-1" if "iso-8859-1" in path.name else "utf-8")


def load_mime(path: Path | None, line_endings: str) -> bytes:
    if path is None:
        require_corpus()
    raw = path.read_bytes()
    return re.sub(rb"\r?\n", b"\r\n", raw) if line_endings == "crlf" else raw


TREE_KEYS = ("path", "content_type", "charset", "cte", "disposition", "filename", "content_id")


def parts_tree(msg: Message) -> list[dict]:
    """Depth-first part list in the corpus manifest's format."""
    out = []

    def walk(part: Message, path: str) -> None:
        cte = part.get("Content-Transfer-Encoding")
        out.append({
            "path": path,
            "content_type": part.get_content_type(),
            "charset": _str(part.get_param("charset")),
            "cte": (str(cte).strip() or None) if cte is not None else None,
            "disposition": part.get_content_disposition(),
            "filename": _str(part.get_filename()),
            "content_id": _str(part.get("Content-ID")),
        })
        if part.is_multipart():
            for i, child in enumerate(part.get_payload(), 1):
                walk(child, f"{path}.{i}")

    walk(msg, "1")
    return out


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def leaves(msg: Message, text_parts: bool = False) -> list[tuple[str, Message, bool]]:
    """(path, part, may the relay rewrite it) for every leaf, depth-first."""
    out = []

    def walk(part: Message, path: str, sealed: bool) -> None:
        sealed = sealed or part.get_content_maintype() == "message" or part.get_content_disposition() == "attachment"
        sealed = sealed or part.get_content_type() in ("multipart/signed", "multipart/encrypted")
        if part.is_multipart():
            for i, child in enumerate(part.get_payload(), 1):
                walk(child, f"{path}.{i}", sealed)
        else:
            wanted = ("text/html", "text/plain") if text_parts else ("text/html",)
            out.append((path, part, not sealed and part.get_content_type() in wanted))

    walk(msg, "1", False)
    return out


def decoded_text(part: Message) -> str:
    data = part.get_payload(decode=True)
    cte = str(part.get("Content-Transfer-Encoding", "")).lower()
    if cte.split(";")[0].strip() == "quoted-printable" and cte.strip() != "quoted-printable":
        data = quopri.decodestring(data)  # compat32 leaves "quoted-printable;" undecoded
    charset = part.get_content_charset() or "us-ascii"
    try:
        codec = codecs.lookup(charset).name
    except LookupError:
        codec = codecs.lookup(charset.removeprefix("x-")).name
    return data.decode(codec, "surrogateescape")


def parse(raw: bytes, policy: email.policy.Policy = email.policy.compat32) -> Message:
    return email.message_from_bytes(raw, policy=policy)


def header_block(raw: bytes) -> bytes:
    return raw[: re.search(rb"\r?\n\r?\n", raw).end()]


def mime_message(html_text: str, *, charset: str = "utf-8", cte: str = "quoted-printable", crlf: bool = False,
                 extra_headers: str = "", text: str = "Plain https://shop.example/plain and more.\n") -> bytes:
    # Characters the charset lacks become character references, as a mail client would write them.
    body = html_text.encode("ascii" if cte == "7bit" else charset, "xmlcharrefreplace")
    if cte == "quoted-printable":
        encoded = quopri.encodestring(body)
    elif cte == "base64":
        encoded = base64.encodebytes(body)
    else:
        encoded = body
    raw = (
        "From: a@shop.example\nTo: b@example.org\nSubject: test\nMIME-Version: 1.0\n" + extra_headers
        + 'Content-Type: multipart/alternative; boundary="b1"\n\n--b1\n'
        + "Content-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: 7bit\n\n" + text
        + f"\n--b1\nContent-Type: text/html; charset={charset}\nContent-Transfer-Encoding: {cte}\n\n"
    ).encode() + encoded + b"\n--b1--\n"
    return raw.replace(b"\n", b"\r\n") if crlf else raw


def html_part(raw: bytes, index: int = 0) -> Message:
    return [part for _, part, _ in leaves(parse(raw)) if part.get_content_type() == "text/html"][index]


# ---------------------------------------------------------------- corpus: HTML


@pytest.mark.parametrize("path", corpus_files("html", "*.html"))
def test_corpus_html_tracks_exactly_the_links_the_rules_name(path: Path | None) -> None:
    if path is None:
        require_corpus()
    doc = read_html(path)
    entry = manifest()["html"][path.name]
    seen = tokenizer_links(doc)
    # The manifest counts hrefs with a regex; the stdlib tokenizer agrees on every file.
    for tag in ("a", "area"):
        count = sum(1 for link in seen if link["tag"] == tag and HTTP.match(browser_url(link["href"] or "")))
        assert count == entry["href_by_tag"].get(f"{tag}:http", 0)
    out, links, pixel = rewrite_html(doc, PLAN)
    assert [link.url for link in links] == expected_urls(doc)
    assert [link.position for link in links] == list(range(len(links)))
    assert rewrite_html(doc, OTHER_TOKENS)[1] == links  # per-recipient tokens change no link


@pytest.mark.parametrize("path", corpus_files("html", "*.html"))
def test_corpus_html_changes_nothing_but_link_targets_and_one_pixel(path: Path | None) -> None:
    if path is None:
        require_corpus()
    doc = read_html(path)
    out, links, pixel = rewrite_html(doc, PLAN)
    assert pixel and len(pixel_pattern(PLAN).findall(out)) == 1
    assert undo(doc, out, links) == doc  # <link href>, mailto:, comments, entities: all as they were
    if manifest()["html"][path.name]["has_body_close"]:
        assert pixel_pattern(PLAN).search(out).end() == out.lower().rfind("</body>")
    else:
        assert pixel_pattern(PLAN).search(out).end() == len(out)
    assert rewrite_html(out, PLAN) == (out, (), False)  # a second run finds nothing to do


def test_corpus_html_non_utf8_bytes_survive() -> None:
    path = require_corpus() / "html" / "derived-from-mime--provantage-74-links.iso-8859-1.html"
    # Despite its name the file is pure ASCII (nbsp and friends are entities), so add
    # some ISO-8859-1 bytes, as the parent message's charset allows.
    raw = path.read_bytes().replace(b"</body>", b"<p>Gr\xfc\xdfe, caf\xe9 \xa0\xbd</p></body>", 1)
    out, links, _ = rewrite_html(raw.decode("latin-1"), PLAN)
    assert undo(raw.decode("latin-1"), out, links).encode("latin-1") == raw
    assert out.encode("latin-1").count(b"Gr\xfc\xdfe, caf\xe9 \xa0\xbd") == 1
    assert len(links) == 73  # 74 <a> + 1 <area> http links, one of them says unsubscribe


# ---------------------------------------------------------------- corpus: MIME


@pytest.mark.parametrize("line_endings", ["as-published", "crlf"])
@pytest.mark.parametrize("path", corpus_files("mime", "*.eml"))
def test_corpus_mime_rewrites_only_html_bodies(path: Path | None, line_endings: str) -> None:
    raw = load_mime(path, line_endings)
    result = rewrite_message(raw, SIGNED_OK)  # signed mail too, to exercise every message
    out = result.data
    before, after = parse(raw), parse(out)
    assert parts_tree(after) == parts_tree(before)
    listed = manifest()["mime"][path.name]["parts"]  # text/html entries also carry link counts
    assert parts_tree(parse(out, email.policy.default)) == [{k: p[k] for k in TREE_KEYS} for p in listed]
    assert header_block(out) == header_block(raw)
    positions = 0
    unsubscribe = frozenset(re.findall(r"<(https?://[^>]*)>", str(before.get("List-Unsubscribe", ""))))
    for (path_, old, rewritable), (_, new, _) in zip(leaves(before), leaves(after)):
        assert new.items() == old.items()  # every part's headers, charset and CTE included
        if not rewritable or old.get_payload() == new.get_payload():
            assert new.get_payload() == old.get_payload()
            assert hashlib.sha256(new.get_payload(decode=True)).digest() == hashlib.sha256(
                old.get_payload(decode=True)).digest()
            continue
        expected, links, _ = rewrite_html(decoded_text(old), SIGNED_OK, first_position=positions,
                                          unsubscribe_urls=unsubscribe)
        assert decoded_text(new) == expected, path_
        assert tuple(result.links[positions:positions + len(links)]) == links
        positions += len(links)
        _assert_encoding_like(old, new)
    assert positions == len(result.links)
    if line_endings == "crlf":
        assert not BARE_LF.search(out)
    assert rewrite_message(out, SIGNED_OK).data == out  # idempotent
    assert rewrite_message(raw, replace(OTHER_TOKENS, allow_dkim_signed=True)).links == result.links


def copy_plans(n: int, plan: RewritePlan = SIGNED_OK) -> list[RewritePlan]:
    """Plans of n copies of one message, as delivery makes them: only the token differs."""
    plans = []
    for token in [secrets.token_urlsafe(18) for _ in range(n)]:
        plans.append(replace(plan, token=token, pixel_url=f"http://t.example/o/{token}.gif",
                             click_base=f"http://t.example/c/{token}/"))
    return plans


@pytest.mark.parametrize("path", corpus_files("mime", "*.eml"))
def test_corpus_copies_rewritten_once_equal_copies_rewritten_alone(path: Path | None) -> None:
    raw = load_mime(path, "crlf")
    plans = copy_plans(3)
    assert rewrite_copies(raw, plans) == [rewrite_message(raw, plan) for plan in plans]


def _assert_encoding_like(old: Message, new: Message) -> None:
    cte = str(new.get("Content-Transfer-Encoding", "")).split(";")[0].strip().lower()
    body, old_body = new.get_payload(), old.get_payload()
    if cte == "quoted-printable":
        original_lines = set(old_body.splitlines())
        for line in body.splitlines():
            if line not in original_lines:  # lines we encoded; kept ones are the sender's business
                assert len(line) <= 76 and re.fullmatch(r"(?:[\t\x20-\x3c\x3e-\x7e]|=[0-9A-F]{2})*=?", line), line
    elif cte == "base64":
        widths = {len(line) for line in body.splitlines()[:-1]}
        assert widths <= {len(old_body.splitlines()[0])}


@pytest.mark.parametrize("path", corpus_files("mime", "*.eml"))
def test_corpus_dkim_signed_mail_goes_out_unmodified(path: Path | None) -> None:
    raw = load_mime(path, "as-published")
    result = rewrite_message(raw, PLAN)
    if manifest()["mime"][path.name]["dkim_signature"]:
        assert result == RewriteResult(raw, (), False, "dkim-signed")
    else:
        assert result.skipped != "dkim-signed"


def test_corpus_has_fifteen_dkim_signed_messages() -> None:
    assert sum(entry["dkim_signature"] for entry in manifest()["mime"].values()) == 15


@pytest.mark.parametrize("name", ["cpython--msg_15.eml", "flanker--missing-final-boundary.eml"])
def test_corpus_messages_with_unreliable_boundaries_go_out_unmodified(name: str) -> None:
    raw = (require_corpus() / "mime" / name).read_bytes()
    result = rewrite_message(raw, SIGNED_OK)
    assert result.data is raw and result.links == () and not result.pixel
    assert result.skipped.startswith("malformed MIME: ")


def test_corpus_html_inside_attached_messages_is_not_tracked() -> None:
    for name in ("mimekit--bounce.eml", "flanker--bounce-office365.eml", "mail--attachment_message_rfc822_inline_image.eml"):
        raw = (require_corpus() / "mime" / name).read_bytes()
        out = parse(rewrite_message(raw, SIGNED_OK).data)
        for part in out.walk():
            if part.get_content_type() == "message/rfc822":
                inner = part.get_payload()[0].as_bytes()
                assert b"t.example" not in inner


# ---------------------------------------------------------------- generated documents

HOSTS = ["shop.example", "news.example.org", "t.example.com", "xn--bcher-kva.example"]
PARAMS = ["id", "utm_source", "region", "copy", "not", "lang", "amp"]  # "&region=" is no entity here
NOT_TRACKED = [
    "mailto:help@shop.example", "tel:+3612345678", "#top", "", "javascript:void(0)", "data:text/html,hi",
    "cid:logo@shop", "{{action_url}}", "https://shop.example/{{id}}/x", "https://shop.example/{x}/*|LINK|*", "*|UNSUB|*", "<%asm_group_unsubscribe_raw_url%>",
    "[unsubscribe]", "facebook.com/shop", "http://t.example/c/OLD/3", "http://t.example",
    "https://lists.example/unsubscribe?u=1", "https://shop.example/opt-out", "https://shop.example/leiratkozas",
]
TEXTS = ["Shop now", "Read <b>more</b> &rarr;", "", '<img src="https://img.example/a.png" alt="">', "adopt outright"]
UNSUB_TEXTS = ["Unsubscribe", "UNSUBSCRIBE here", "opt out", "Opt-Out", "Leiratkozás", "<b>Un</b>subscribe"]
ATTRS = [' style="color:#fff; background:url(\'x.png\')"', " target=_blank", " title='a > b'",
         ' data-href="http://nope.example/"', " class=btn", " hreflang=en", '\n   id="x"']
NOTRACK_ATTRS = [" data-notrack", ' data-notrack="1"', " DATA-NOTRACK"]
FILLERS = [
    "Hello &amp; welcome&nbsp;", "\n  ", "5 &lt; 6 &gt; 4 &lt;a href=\"http://no.example/\"&gt;",
    '<!-- <a href="http://hidden.example/">x</a> -->', "<!---->", "<p>to unsubscribe, reply</p>",
    '<style>a[href="http://style.example/"] { color: red }</style>',
    "<script>document.write('<a href=\"http://script.example/\">')</script>",
    '<link rel="stylesheet" href="http://fonts.example/css?family=A&amp;b=1">',
    '<img src="http://img.example/x.png" alt="<a href=\'http://alt.example/\'>">',
    '<td style="width:100px">', "</td>", "<br/>", "<title>t</title>",
]


@st.composite
def http_url(draw: st.DrawFn) -> tuple[str, str]:
    """(href text as written, URL it means)."""
    written = meant = draw(st.sampled_from(["http://", "https://", "HTTPS://"])) + draw(st.sampled_from(HOSTS)) + "/"
    path = "/".join(draw(st.lists(st.sampled_from(["a", "b-c", "%7Cx", "%E2%82%AC", "d.html", "~u"]), max_size=3)))
    written, meant = written + path, meant + path
    for i in range(draw(st.integers(0, 3))):
        if i == 0:
            sep_written = sep_meant = "?"
        else:
            sep_written, sep_meant = draw(st.sampled_from([("&amp;", "&"), ("&", "&"), ("&#38;", "&"), ("&#x26;", "&")]))
        pair = draw(st.sampled_from(PARAMS)) + "=" + draw(st.sampled_from(["1", "mail", "a%20b", "x|y"]))
        written, meant = written + sep_written + pair, meant + sep_meant + pair
    fragment = draw(st.sampled_from([("", ""), ("#top", "#top"), ("#a%20b", "#a%20b"), ("#x&amp;y", "#x&y")]))
    return written + fragment[0], meant + fragment[1]


@st.composite
def link(draw: st.DrawFn) -> tuple[str, str, str | None]:
    """(markup as written, markup expected out with {n} for the link number, URL tracked or None)."""
    kind = draw(st.sampled_from(["track", "track", "track", "other", "unsub_text", "notrack"]))
    if kind == "other":
        written = draw(st.sampled_from(NOT_TRACKED))
        meant = None
    else:
        written, meant = draw(http_url())
    text = draw(st.sampled_from(UNSUB_TEXTS if kind == "unsub_text" else TEXTS))
    quote = draw(st.sampled_from(['"', "'", ""] if re.fullmatch(r"[^\s\"'<>=`]+", written) else ['"', "'"]))
    if quote and draw(st.booleans()):
        written = draw(st.sampled_from([" ", "\n  "])) + written + " "
    tracked = meant if kind == "track" else None
    pre, post = draw(st.lists(st.sampled_from(ATTRS), max_size=2)), draw(st.lists(st.sampled_from(ATTRS), max_size=2))
    notrack = draw(st.sampled_from(NOTRACK_ATTRS)) if kind == "notrack" else ""
    where = draw(st.booleans())
    name = draw(st.sampled_from(["href", "HREF", "href ", "href = "]))
    eq = "" if name.endswith("= ") else "="
    value_in, value_out = quote + written + quote, quote + ("{n}" if tracked else written) + quote
    tag = draw(st.sampled_from(["a", "A", "area", "v:roundrect"]))
    if tag == "area":
        text = re.sub(r"<[^>]*>", "", text)
        open_in = f'<area{"".join(pre)}{notrack if where else ""} {name}{eq}{value_in}{"".join(post)}{"" if where else notrack} alt="{text}">'
        open_out = f'<area{"".join(pre)} {name}{eq}{value_out}{"".join(post)} alt="{text}">'
        close = ""
    else:
        open_in = f'<{tag}{"".join(pre)}{notrack if where else ""} {name}{eq}{value_in}{"".join(post)}{"" if where else notrack}>'
        open_out = f'<{tag}{"".join(pre)} {name}{eq}{value_out}{"".join(post)}>'
        close = f"{text}</a>" if tag.lower() == "a" else f"<w:anchorlock/><center>{text}</center></v:roundrect>"
    markup_in, markup_out = open_in + close, open_out + close
    if draw(st.booleans()):
        markup_in, markup_out = (f"<!--[if mso]>{m}<![endif]-->" for m in (markup_in, markup_out))
    return markup_in, markup_out, tracked


@st.composite
def document(draw: st.DrawFn) -> tuple[str, list[str], list[str | None], str]:
    """(body as written, expected body pieces, URL tracked or None per link, wrapper kind)."""
    pieces_in, pieces_out, tracked = [], [], []
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.booleans()):
            filler = draw(st.sampled_from(FILLERS))
            pieces_in.append(filler)
            pieces_out.append(filler)
        else:
            markup_in, markup_out, url = draw(link())
            pieces_in.append(markup_in)
            pieces_out.append(markup_out)
            tracked.append(url)
    wrapper = draw(st.sampled_from(["fragment", "document", "shouting"]))
    return "".join(pieces_in), pieces_out, tracked, wrapper


def _wrap(wrapper: str, body: str, pixel: str, position: str) -> str:
    top, bottom = (pixel, "") if position == "top" else ("", pixel)
    if wrapper == "fragment":
        return top + body + bottom
    if wrapper == "document":
        return f'<!DOCTYPE html><html><head><title>T</title></head><body class="x">{top}{body}{bottom}</body></html>\n'
    return f"<HTML><BODY>{top}{body}{bottom}</BODY><!-- </body> -->\n</HTML>"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=document(), position=st.sampled_from(["bottom", "top"]))
def test_generated_html_gets_exactly_the_expected_output(doc: tuple, position: str) -> None:
    body_in, pieces_out, tracked, wrapper = doc
    plan = replace(PLAN, pixel_position=position)
    out, links, pixel = rewrite_html(_wrap(wrapper, body_in, "", position), plan)
    urls = [url for url in tracked if url is not None]
    assert [link.url for link in links] == urls
    assert [link.position for link in links] == list(range(len(urls)))
    number = iter(range(len(urls)))
    body_out = "".join(p.replace("{n}", f"{plan.click_base}{next(number)}") if "{n}" in p else p for p in pieces_out)
    pixel_tag = pixel_pattern(plan).search(out).group()
    assert pixel and out == _wrap(wrapper, body_out, pixel_tag, position)
    again = rewrite_html(out, plan)
    assert not again[2]
    if "notrack" not in body_in.lower():  # a data-notrack link is tracked once the mark is gone
        assert again == (out, (), False)


SOUP = st.lists(
    st.sampled_from([
        "<a ", "<A", "<area ", "<v:roundrect ", "href=", "HREF =", '"', "'", ">", "<", "/>", "</a>", " ",
        "http://x.example/", "https://y.example/?a=1&amp;b", "mailto:z", "&amp;", "&#38;", "&", "<!--", "-->",
        "<!--[if mso]>", "<![endif]-->", "<body>", "</body>", "<script>", "</script>", "<style>", "</style>",
        "unsubscribe", "{{x}}", "<img src=", "\n", "=", "<title>",
    ]) | st.text(max_size=3),
    max_size=40,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(doc=SOUP, position=st.sampled_from(["bottom", "top"]))
def test_any_markup_soup_is_changed_only_at_link_targets(doc: str, position: str) -> None:
    plan = replace(PLAN, pixel_position=position)
    out, links, pixel = rewrite_html(doc, plan)
    assert pixel and len(pixel_pattern(plan).findall(out)) == 1
    assert undo(doc, out, links, plan, decode=clean_url) == doc
    assert rewrite_html(out, plan) == (out, (), False)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc=document(),
    charset=st.sampled_from(["utf-8", "iso-8859-1", "windows-1252", "koi8-r"]),
    cte=st.sampled_from(["quoted-printable", "base64", "8bit", "7bit"]),
    crlf=st.booleans(),
    greeting=st.sampled_from(["", "Grüße, ", "Hello, "]),
)
def test_generated_messages_keep_charset_encoding_and_line_endings(
    doc: tuple, charset: str, cte: str, crlf: bool, greeting: str
) -> None:
    body_in, _, tracked, wrapper = doc
    html_text = _wrap(wrapper, greeting + body_in + "\n" + "x" * 90 + " long line\n", "", "bottom")
    raw = mime_message(html_text, charset=charset, cte=cte, crlf=crlf)
    result = rewrite_message(raw, PLAN)
    assert result.skipped is None and result.pixel
    assert [link.url for link in result.links] == [url for url in tracked if url is not None]
    old, new = html_part(raw), html_part(result.data)
    assert new.items() == old.items()
    assert decoded_text(new) == rewrite_html(decoded_text(old), PLAN)[0]
    _assert_encoding_like(old, new)
    assert bool(BARE_LF.search(result.data)) is not crlf
    assert result.data.split(b"--b1")[1] == raw.split(b"--b1")[1]  # the text/plain part


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc=document(),
    cte=st.sampled_from(["quoted-printable", "base64", "8bit"]),
    indent=st.integers(min_value=0, max_value=80),  # moves the tokens across QP soft breaks
    text_links=st.booleans(),
)
def test_generated_copies_rewritten_once_equal_copies_rewritten_alone(
    doc: tuple, cte: str, indent: int, text_links: bool
) -> None:
    html_text = _wrap(doc[3], " " * indent + doc[0], "", "bottom")
    raw = mime_message(html_text, charset="utf-8", cte=cte, crlf=True)
    plans = copy_plans(3, replace(PLAN, text_links=text_links))
    plans[2] = replace(plans[2], clicks=False)  # a copy with another plan is rewritten on its own
    assert rewrite_copies(raw, plans) == [rewrite_message(raw, plan) for plan in plans]


def test_a_token_cut_by_a_soft_line_break_is_swapped_as_well() -> None:
    # a link long enough that quoted-printable must break inside the token
    html_text = '<p><a href="https://example.com/">x</a></p>' + "y" * 200
    raw = mime_message(html_text, charset="utf-8", cte="quoted-printable", crlf=True)
    plans = [replace(p, click_base=p.click_base.replace("/c/", "/c/" + "z" * 40)) for p in copy_plans(2)]
    results = rewrite_copies(raw, plans)
    # the pixel's token is whole, the link's is cut in two
    assert results[0].data.count(plans[0].token.encode()) == 1 and len(results[0].links) == 1
    assert results == [rewrite_message(raw, plan) for plan in plans]
    assert quopri.decodestring(results[1].data).decode().count(plans[1].token) == 2
    assert _stamper(raw, plans[0], results[0]) is not None  # stamped, not rewritten twice


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=300) | st.lists(st.sampled_from([
    b"Content-Type: multipart/mixed; boundary=x\n", b"Content-Type: text/html; charset=utf-8\n",
    b"Content-Transfer-Encoding: quoted-printable\n", b"Content-Transfer-Encoding: base64\n", b"\n", b"--x\n",
    b"--x--\n", b"<a href=http://a.example/>a</a>", b"=3D", b"=\n", b"\r\n", b"\xff\xfe", b"</body>",
]), max_size=20).map(b"".join))
def test_rewrite_message_never_raises(raw: bytes) -> None:
    result = rewrite_message(raw, SIGNED_OK)
    assert isinstance(result.data, bytes)
    # "rewrite failed" is the catch-all of rewrite_message: an exception, mail changed or not
    assert result.skipped is None or not result.skipped.startswith("rewrite failed"), result.skipped
    if result.data != raw:
        assert parts_tree(parse(result.data)) == parts_tree(parse(raw))


# ---------------------------------------------------------------- hand-written cases


def test_vml_buttons_and_their_fallback_links_are_tracked() -> None:
    doc = (FIXTURES / "vml-bulletproof-button.html").read_text(encoding="utf-8")
    out, links, pixel = rewrite_html(doc, PLAN)
    assert [link.url for link in links] == [
        "https://shop.example/hero?utm_source=mail&utm_content=hero-mso",
        "https://shop.example/sale?utm_source=mail&utm_content=button-mso",
        "https://shop.example/sale?utm_source=mail&utm_content=button",
    ]
    assert "href='http://t.example/c/TOKEN/0'" in out  # <v:rect>, quoting kept
    assert 'href="http://t.example/c/TOKEN/1"\n' in out  # <v:roundrect>
    assert 'src="https://cdn.example/hero.jpg"' in out and "https://should-not-be-touched.example/" in out
    assert out.count("https://shop.example/unsubscribe?u=42") == 2  # VML and HTML unsubscribe buttons
    assert pixel and out.index("<img src=\"http://t.example/o/PIXEL.gif\"") == out.index("</BODY>") - len(
        pixel_pattern(PLAN).search(out).group())
    assert undo(doc, out, links) == doc


def test_pixel_is_a_hidden_one_by_one_image() -> None:
    out, _, _ = rewrite_html("<p>hi</p>", replace(PLAN, pixel_url="http://t.example/o/a&b.gif"))
    tag = out[len("<p>hi</p>"):]
    for attribute in ('src="http://t.example/o/a&amp;b.gif"', 'width="1"', 'height="1"', 'alt=""', 'border="0"',
                      "display:none"):
        assert attribute in tag
    assert re.fullmatch(r"<img [^<>]*/>", tag)


@pytest.mark.parametrize(("doc", "position", "expected"), [
    ("<html><body>x</body></html>", "bottom", "<html><body>xPIXEL</body></html>"),
    ("<body>a</body><p>b</p></BODY>", "bottom", "<body>a</body><p>b</p>PIXEL</BODY>"),
    ("<body>a</body><!-- </body> -->", "bottom", "<body>aPIXEL</body><!-- </body> -->"),
    ("<p>fragment</p>", "bottom", "<p>fragment</p>PIXEL"),
    ('<BODY class="x">a</BODY>', "top", '<BODY class="x">PIXELa</BODY>'),
    ("<!--[if mso]><body><![endif]--><body>a", "top", "<!--[if mso]><body><![endif]--><body>PIXELa"),
    ("<!DOCTYPE html>\n<p>a</p>", "top", "<!DOCTYPE html>PIXEL\n<p>a</p>"),
    ("<p>fragment</p>", "top", "PIXEL<p>fragment</p>"),
])
def test_pixel_position(doc: str, position: str, expected: str) -> None:
    plan = replace(PLAN, pixel_position=position)
    out, _, pixel = rewrite_html(doc, plan)
    assert pixel and pixel_pattern(plan).sub("PIXEL", out) == expected


def test_an_existing_pixel_of_ours_is_not_added_again() -> None:
    doc = '<body>x<img src="http://t.example/o/EARLIER-COPY.gif" width="1" height="1"></body>'
    assert rewrite_html(doc, PLAN) == (doc, (), False)
    foreign = '<body>x<img src="http://tracker.example/o/1.gif"></body>'
    assert rewrite_html(foreign, PLAN)[2]


def test_data_notrack_is_removed_and_its_link_left_alone() -> None:
    doc = ('<a data-notrack href="https://a.example/">a</a> <a href="mailto:x@y" data-notrack="yes">m</a> '
           '<a\n  data-notrack\n  href="https://b.example/">b</a> <a href="https://c.example/">c</a>')
    out, links, _ = rewrite_html(doc, replace(PLAN, opens=False))
    assert out == ('<a href="https://a.example/">a</a> <a href="mailto:x@y">m</a> '
                   '<a\n\n  href="https://b.example/">b</a> <a href="http://t.example/c/TOKEN/0">c</a>')
    assert links == (Link(0, "https://c.example/"),)
    assert rewrite_html(doc, replace(PLAN, opens=False, clicks=False))[0].count("notrack") == 0


@pytest.mark.parametrize("markup", [
    '<a href="https://x.example/unsubscribe?u=1">Manage</a>',
    '<a href="https://x.example/u?id=1">Unsubscribe</a>',
    '<a href="https://x.example/u?id=1">Click here to <b>opt out</b></a>',
    '<a href="https://x.example/u?id=1">Opt-Out</a>',
    '<a href="https://x.example/u?id=1">Leiratkoz&aacute;s</a>',
    '<a href="https://x.example/u?id=1"><span>Un</span>subscribe</a>',
    '<area href="https://x.example/u?id=1" alt="Unsubscribe">',
    '<!--[if mso]><v:roundrect href="https://x.example/u?id=1"><center>Unsubscribe</center></v:roundrect><![endif]-->',
])
def test_unsubscribe_links_are_left_alone(markup: str) -> None:
    assert rewrite_html(markup, PLAN)[1] == ()


def test_list_unsubscribe_targets_are_left_alone() -> None:
    target = "https://news.example/u/83c1?sig=abc&list=weekly"
    doc = f'<a href="{target.replace("&", "&amp;")}">Preferences</a> <a href="https://news.example/">Home</a>'
    raw = mime_message(doc, cte="7bit", extra_headers=f"List-Unsubscribe: <mailto:u@news.example>,\n <{target}>\n")
    result = rewrite_message(raw, PLAN)
    assert [link.url for link in result.links] == ["https://news.example/"]


@pytest.mark.parametrize("href", NOT_TRACKED)
def test_hrefs_that_are_no_trackable_web_links_are_left_alone(href: str) -> None:
    doc = f'<a href="{href}">x</a><link rel="stylesheet" href="https://fonts.example/css?a=1&amp;b=2">'
    out, links, _ = rewrite_html(doc, replace(PLAN, opens=False))
    assert (out, links) == (doc, ())


@pytest.mark.parametrize(("written", "meant"), [
    ("https://x.example/?a=1&amp;b=2", "https://x.example/?a=1&b=2"),
    ("https://x.example/?a=1&b=2", "https://x.example/?a=1&b=2"),
    ("https://x.example/?a=1&amp;amp;b=2", "https://x.example/?a=1&amp;b=2"),  # decoded once
    ("https://x.example/?a=1&region=eu&copy=2&not=3", "https://x.example/?a=1&region=eu&copy=2&not=3"),
    ("https://x.example/?q=&lt;x&gt;&#38;&#x26;", "https://x.example/?q=<x>&&"),
    ("https://x.example/a%7Cb?c=%20#frag&amp;x", "https://x.example/a%7Cb?c=%20#frag&x"),
    ("  https://x.example/\n\tlong/path  ", "https://x.example/long/path"),  # the URL parser drops tabs, newlines
    ("https://x.example/a b", "https://x.example/a b"),
    ("HTTPS://X.example/Case", "HTTPS://X.example/Case"),
])
def test_redirect_target_is_the_url_as_the_author_meant_it(written: str, meant: str) -> None:
    assert rewrite_html(f'<a href="{written}">x</a>', PLAN)[1] == (Link(0, meant),)


@pytest.mark.parametrize(("markup", "expected"), [
    ('<a href="https://x.example/">', '<a href="http://t.example/c/TOKEN/0">'),
    ("<a href='https://x.example/'>", "<a href='http://t.example/c/TOKEN/0'>"),
    ("<a href=https://x.example/>", "<a href=http://t.example/c/TOKEN/0>"),
    ('<A class=b HREF = "https://x.example/" href="https://second.example/">', '<A class=b HREF = "http://t.example/c/TOKEN/0" href="https://second.example/">'),
    ('<a title="href=https://no.example/" href="https://x.example/">', '<a title="href=https://no.example/" href="http://t.example/c/TOKEN/0">'),
])
def test_only_the_href_value_changes_and_its_quoting_stays(markup: str, expected: str) -> None:
    assert rewrite_html(markup, replace(PLAN, opens=False))[0] == expected


def test_click_urls_are_made_attribute_safe() -> None:
    plan = replace(PLAN, opens=False, click_base='http://t.example/c/a&b"c/')
    assert rewrite_html('<a href="https://x.example/">', plan)[0] == '<a href="http://t.example/c/a&amp;b&quot;c/0">'
    assert rewrite_html("<a href=https://x.example/>", plan)[0] == '<a href="http://t.example/c/a&amp;b&quot;c/0">'


def test_markup_in_scripts_styles_comments_and_attributes_is_no_link() -> None:
    doc = (
        "<script>var a = '<a href=\"https://script.example/\">';</script>"
        "<style>a[href='https://style.example/'] {}</style><title><a href=https://title.example/></title>"
        '<!-- <a href="https://comment.example/"> -->'
        '<img alt="<a href=\'https://alt.example/\'>" src="x.png">'
        '<!--[if mso]><a href="https://mso.example/">Outlook</a><![endif]-->'
        '<!--[if !mso]><!--><a href="https://other.example/">Others</a><!--<![endif]-->'
    )
    out, links, _ = rewrite_html(doc, replace(PLAN, opens=False))
    assert [link.url for link in links] == ["https://mso.example/", "https://other.example/"]
    assert undo(doc, out, links) == doc


def test_an_unterminated_tag_ends_the_scan_like_a_browser() -> None:
    doc = '<a href="https://x.example/">x</a><p class="oops <a href="https://y.example/">y'
    assert [link.url for link in rewrite_html(doc, PLAN)[1]] == ["https://x.example/"]


def test_nothing_to_do_returns_the_very_same_bytes() -> None:
    raw = mime_message('<a href="https://x.example/">x</a>')
    assert rewrite_message(raw, replace(PLAN, opens=False, clicks=False)).data is raw
    plain = b"From: a@b.example\nSubject: hi\n\nhttps://x.example/\n"
    assert rewrite_message(plain, PLAN) == RewriteResult(plain, (), False, None)
    assert rewrite_message(plain, PLAN).data is plain  # delivery signs only what changed


def test_text_parts_change_only_with_text_links() -> None:
    text = ("See https://shop.example/a?b=1&c=2.\nDocs (https://docs.example/x_(y)) and <https://z.example/>.\n"
            "To stop these mails:\nhttps://shop.example/stop?u=1\nhttp://t.example/c/OLD/1\n")
    raw = mime_message('<a href="https://shop.example/html">x</a>', cte="7bit", text=text)
    assert rewrite_message(raw, PLAN).data.split(b"--b1")[1] == raw.split(b"--b1")[1]
    result = rewrite_message(raw, replace(PLAN, text_links=True))
    assert [(link.position, link.url) for link in result.links] == [
        (0, "https://shop.example/html"),
        (1, "https://shop.example/a?b=1&c=2"),
        (2, "https://docs.example/x_(y)"),
        (3, "https://z.example/"),
        (4, "https://shop.example/stop?u=1"),
    ]
    text_out = parse(result.data).get_payload()[0].get_payload()
    assert text_out.startswith("See http://t.example/c/TOKEN/1.\nDocs (http://t.example/c/TOKEN/2) and <http://t.example/c/TOKEN/3>.")
    unsubscribe = text.replace("To stop these mails:", "To unsubscribe:")
    result = rewrite_message(mime_message("<p>x</p>", cte="7bit", text=unsubscribe), replace(PLAN, text_links=True))
    assert "https://shop.example/stop?u=1" not in [link.url for link in result.links]


def test_links_are_numbered_across_html_parts_in_document_order() -> None:
    part = 'Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n<a href="https://{0}.example/">{0}</a>\n'
    raw = ("From: a@b.example\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=o\n\n--o\n"
           "Content-Type: multipart/alternative; boundary=i\n\n--i\n" + part.format("one") + "--i--\n--o\n"
           + part.format("two") + "--o\n" + part.format("three").replace("7bit\n", "7bit\nContent-Disposition: attachment\n")
           + "--o--\n").encode()
    result = rewrite_message(raw, PLAN)
    assert [(link.position, link.url) for link in result.links] == [(0, "https://one.example/"), (1, "https://two.example/")]
    assert result.data.count(b"/o/PIXEL.gif") == 2 and b"https://three.example/" in result.data


@pytest.mark.parametrize("crlf", [False, True])
def test_quoted_printable_stays_valid_and_in_style(crlf: bool) -> None:
    long_link = '<a href="https://x.example/' + "p" * 120 + '?q=1&amp;r=2">long</a>'
    doc = "<p>Grüße, = signs and trailing space \n" + long_link + "</p>\n<p>" + "z" * 200 + "</p>\n"
    raw = mime_message(doc, cte="quoted-printable", crlf=crlf)
    result = rewrite_message(raw, PLAN)
    body = html_part(result.data).get_payload()
    assert all(len(line) <= 76 for line in body.splitlines())
    assert decoded_text(html_part(result.data)) == rewrite_html(decoded_text(html_part(raw)), PLAN)[0]
    assert bool(BARE_LF.search(result.data)) is not crlf
    unchanged_line = quopri.encodestring(("<p>" + "z" * 200 + "</p>").encode()).split(b"\n")[0].decode()
    assert unchanged_line in body  # lines without a change keep their encoding


def test_quoted_printable_lines_without_a_change_keep_the_senders_encoding() -> None:
    kept = "<p>Hello =41nd welcome, this line is soft-broken early=\n by its sender</p>\n"
    encoded = kept + '<p><a href=3D"https://x.example/">x</a></p>\n' + kept
    raw = mime_message("", cte="quoted-printable").replace(b"\n\n\n--b1--", b"\n\n" + encoded.encode() + b"\n--b1--")
    result = rewrite_message(raw, PLAN)
    body = html_part(result.data).get_payload()
    assert body.startswith(kept) and body.count(kept) == 2 and len(result.links) == 1


def test_base64_keeps_its_line_length() -> None:
    doc = '<p>hello</p><a href="https://x.example/">x</a>' * 20
    encoded = b"\n".join(base64.b64encode(doc.encode())[i:i + 60] for i in range(0, 2000, 60)).rstrip(b"\n") + b"\n"
    raw = mime_message(doc, cte="base64").replace(base64.encodebytes(doc.encode()), encoded)
    result = rewrite_message(raw, PLAN)
    lines = html_part(result.data).get_payload().splitlines()
    assert {len(line) for line in lines[:-1]} == {60} and len(result.links) == 20


@pytest.mark.parametrize(("header", "reason"), [
    ("Content-Type: text/html; charset=x-foo", "unknown charset x-foo in part 1.2"),
    ("Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: x-uuencode",
     "unknown transfer encoding x-uuencode in part 1.2"),
    ("Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64", "undecodable base64 body in part 1.2"),
])
def test_a_part_that_cannot_be_decoded_goes_out_unmodified(header: str, reason: str) -> None:
    raw = (f"From: a@b.example\nContent-Type: multipart/alternative; boundary=b\n\n--b\n"
           f"Content-Type: text/plain\n\nhi\n--b\n{header}\n\n<a href=\"https://x.example/\">x</a>\n--b--\n").encode()
    assert rewrite_message(raw, PLAN) == RewriteResult(raw, (), False, reason)


def test_signed_encrypted_and_attached_html_is_left_alone() -> None:
    html_leaf = 'Content-Type: text/html\n\n<a href="https://x.example/">x</a>\n'
    signed = (f"From: a@b.example\nContent-Type: multipart/signed; protocol=\"application/pgp-signature\"; boundary=s\n\n"
              f"--s\n{html_leaf}--s\nContent-Type: application/pgp-signature\n\nSIG\n--s--\n").encode()
    assert rewrite_message(signed, PLAN) == RewriteResult(signed, (), False, "multipart/signed part 1 left as is")
    attached = (f"From: a@b.example\nContent-Type: multipart/mixed; boundary=m\n\n--m\n"
                f"Content-Type: text/plain\n\nsee attached\n--m\nContent-Type: message/rfc822\n\n"
                f"From: c@d.example\nContent-Type: multipart/alternative; boundary=n\n\n--n\n{html_leaf}--n--\n"
                f"--m\nContent-Disposition: attachment; filename=page.html\n{html_leaf}--m--\n").encode()
    assert rewrite_message(attached, PLAN) == RewriteResult(attached, (), False, None)


def test_dkim_signed_mail_is_skipped_unless_allowed() -> None:
    raw = mime_message('<a href="https://x.example/">x</a>', extra_headers="DKIM-Signature: v=1; a=rsa-sha256; d=b.example\n")
    assert rewrite_message(raw, PLAN) == RewriteResult(raw, (), False, "dkim-signed")
    result = rewrite_message(raw, SIGNED_OK)
    assert result.links == (Link(0, "https://x.example/"),) and result.pixel and result.skipped is None
    assert header_block(result.data) == header_block(raw)


def test_plan_rejects_an_unknown_pixel_position() -> None:
    with pytest.raises(ValueError, match="pixel_position"):
        replace(PLAN, pixel_position="middle")
