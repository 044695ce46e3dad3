"""Fuzz targets for the rewriter: linear time on adversarial shapes, and no input that
crashes it or changes anything but the link targets and the pixel (DESIGN invariants 3, 9).
"""
from __future__ import annotations

import email
import re
from email.message import Message

from hypothesis import example, given
from hypothesis import strategies as st

from fuzzing import assert_linear, fuzz
from relay.rewrite import RewritePlan, rewrite_message
from relay.rewrite_html import rewrite_html, rewrite_text

PLAN = RewritePlan(opens=True, clicks=True, pixel_url="http://t.example/o/PIXEL.gif",
                   click_base="http://t.example/c/TOKEN/", own_prefix="http://t.example", text_links=True,
                   allow_dkim_signed=True)
PIXEL = re.compile(r'<img src="http://t\.example/o/PIXEL\.gif"[^>]*>')
CLICK = re.compile(r"http://t\.example/c/TOKEN/\d+")

# Pieces of markup that make a scanner look ahead, back or again: unclosed tags, quotes
# and comments, runs of tag starts, links hidden in attribute values, long values.
HTML_PIECES = [
    "<img\r\n", '<b title="<a x=">', "<!--[if mso]>", "<v:rect href=http://v.example/>", "<a ", "<a href=\"",
    "<a href=http://a.example/>", "</a>", "<area href=http://b.example/ alt=x>", "<img src=", "<!--", "-->",
    "<![endif]-->", "<!", "<?", "</", "<", ">", "'", '"', "=", "&amp;", "&", "&#x26;", "&nbsp", "\r", "\n", "\r\n",
    " ", "x" * 40, "unsubscribe", "<body>", "</body>", "<script>", "<title>", "<v:fill>", "</v:rect>",
    "http://t.example/o/", 'src="http://t.example/o/a.gif"', "<b x='", "data-notrack ",
]
TEXT_PIECES = ["http://a.example/", ".", ")", "(", " ", "\n", "\r\n", "unsubscribe", "x" * 40, "https://"]


def repeated(shape: str, size: int) -> str:
    return (shape * (size // len(shape) + 1))[:size]


@fuzz
@given(shape=st.lists(st.sampled_from(HTML_PIECES), min_size=1, max_size=4).map("".join))
@example(shape="<img\r\n")
@example(shape='<b title="<a x=">')
@example(shape="<!--[if mso]>")
@example(shape="<v:rect href=http://v.example/>")
def test_html_rewrite_time_is_linear_in_any_repeated_shape(shape: str) -> None:
    assert_linear(lambda size: repeated(shape, size), lambda doc: rewrite_html(doc, PLAN))


@fuzz
@given(shape=st.lists(st.sampled_from(TEXT_PIECES), min_size=1, max_size=4).map("".join))
@example(shape="http://a.example/ ")
@example(shape=".")
@example(shape=")")
def test_text_rewrite_time_is_linear_in_any_repeated_shape(shape: str) -> None:
    assert_linear(lambda size: "http://u.example/" + repeated(shape, size), lambda doc: rewrite_text(doc, PLAN))


def _nested_multiparts(size: int) -> bytes:
    """Multiparts nested as deep as the size allows, the innermost holding the HTML."""
    depth = size // 60
    heads = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i) for i in range(depth))
    tails = b"".join(b"\n--b%d--\n" % i for i in reversed(range(depth)))
    return b"Subject: deep\n" + heads + b"Content-Type: text/html\n\n<a href=http://a.example/>a</a>" + tails


MIME_SHAPES = {
    "nested multiparts": _nested_multiparts,
    "content-type parameters": lambda size: b"Content-Type: text/html; charset=utf-8" + repeated(
        '; a=";', size).encode() + b"\n\n<a href=http://a.example/>a</a>\n",
    "list-unsubscribe angles": lambda size: b"List-Unsubscribe: " + b"<" * size
    + b"\nContent-Type: text/html\n\n<a href=http://a.example/>a</a>\n",
    "many parts": lambda size: b'Content-Type: multipart/mixed; boundary="b"\n\n' + repeated(
        "--b\nContent-Type: text/html\n\n<a href=http://a.example/>a</a>\n", size).encode() + b"\n--b--\n",
    "boundary lookalikes": lambda size: b'Content-Type: multipart/mixed; boundary="b"\n\n' + repeated(
        "--b x\n--bb", size).encode() + b"\n--b--\n",
}


@fuzz
@given(shape=st.sampled_from(sorted(MIME_SHAPES)))
def test_mime_location_time_is_linear(shape: str) -> None:
    assert_linear(MIME_SHAPES[shape], lambda raw: rewrite_message(raw, PLAN))


# ---------------------------------------------------------------- arbitrary messages

HEADERS = [
    b"Content-Type: multipart/mixed; boundary=x\n", b"Content-Type: multipart/alternative; boundary=\"y\"\n",
    b"Content-Type: text/html; charset=utf-8\n", b"Content-Type: text/html; charset=iso-8859-1\n",
    b"Content-Type: text/plain\n", b"Content-Type: message/rfc822\n", b"Content-Disposition: attachment\n",
    b"Content-Transfer-Encoding: quoted-printable\n", b"Content-Transfer-Encoding: base64\n",
    b"List-Unsubscribe: <http://u.example/>\n", b"\n", b"--x\n", b"--x--\n", b"--y\n", b"--y--\n",
]
BODIES = [b"<a href=http://a.example/>a</a>", b"<a href='http://b.example/?a=1&amp;b=2'>", b"=3D", b"=\n",
          b"\r\n", b"\xff\xfe", b"</body>", b"<!--[if mso]><v:rect href=\"http://v.example/\">", b"<![endif]-->",
          b"PGEgaHJlZj1odHRwOi8vYy5leGFtcGxlLz5j", b"http://d.example/ ", b"<img\r\n", b"<!--", b"<body>"]
MESSAGES = (st.lists(st.sampled_from(HEADERS + BODIES) | st.binary(max_size=8), max_size=30).map(b"".join)
            | st.binary(max_size=400))


def parts_tree(raw: bytes) -> list[tuple[str, str | None, str | None, str | None]]:
    tree = []

    def walk(part: Message) -> None:
        tree.append((part.get_content_type(), part.get_content_charset(), part.get("Content-Transfer-Encoding"),
                     part.get_content_disposition()))
        if part.is_multipart():
            for child in part.get_payload():
                walk(child)

    walk(email.message_from_bytes(raw))
    return tree


@fuzz
@given(raw=MESSAGES)
@example(raw=b"Content-Type: text/html\n\n" + b"<!--[if mso]>" * 400)
@example(raw=b"\x00")
@example(raw=_nested_multiparts(120_000))
def test_any_message_is_rewritten_without_a_crash_and_keeps_its_structure(raw: bytes) -> None:
    result = rewrite_message(raw, PLAN)
    assert result.skipped is None or not result.skipped.startswith("rewrite failed"), result.skipped
    if result.data == raw:
        assert not result.links and not result.pixel
        return
    assert parts_tree(result.data) == parts_tree(raw)
    # invariant 3, on the decoded parts: outside the click URLs and the pixel, nothing moved
    before, after = email.message_from_bytes(raw), email.message_from_bytes(result.data)
    for old, new in zip(before.walk(), after.walk()):
        if old.is_multipart():
            continue
        old_body, new_body = old.get_payload(decode=True), new.get_payload(decode=True)
        if old_body != new_body:
            assert only_urls_replaced(old_body, new_body, len(result.links))


def only_urls_replaced(old: bytes, new: bytes, links: int) -> bool:
    """Without the pixel, the new body is the old one with up to `links` spans put in click URLs."""
    pieces = CLICK.split(PIXEL.sub("", new.decode("latin-1"), count=1))
    pattern = "(.*?)".join(re.escape(piece) for piece in pieces)
    return len(pieces) - 1 <= links and re.fullmatch(pattern, old.decode("latin-1"), re.S) is not None
