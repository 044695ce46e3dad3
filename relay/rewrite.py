"""Add open and click tracking to a raw message by splicing its HTML parts. No I/O.

Nothing re-serialises the message. The parts are found by byte offset: boundaries
split the raw bytes the way email.feedparser splits them, and the stdlib `email`
package (policy.compat32, a Message per part) reads each part's type, charset,
transfer encoding and boundary from its header lines. Only the bodies of the parts
rewritten change, so headers, other parts, attachments and line endings stay
byte-equal (DESIGN invariant 3), and any doubt leaves the mail, or the part,
unmodified (invariant 2). Reading header lines instead of parsing whole messages is
what keeps this cheap: a full compat32 parse of a 19 KB newsletter costs as much as
all of its rewriting.
"""
from __future__ import annotations

import binascii
import bisect
import codecs
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from email.message import Message
from email.policy import compat32

from relay.notice import after_text, with_line_breaks
from relay.rewrite_html import Link, RewritePlan, rewrite_html, rewrite_text

__all__ = ["Link", "RewritePlan", "RewriteResult", "rewrite_copies", "rewrite_html", "rewrite_message"]


@dataclass(frozen=True)
class RewriteResult:
    data: bytes  # the whole message (unchanged bytes when nothing was done)
    links: tuple[Link, ...]
    pixel: bool  # a pixel was inserted
    skipped: str | None  # why the message (or some part) was left unmodified; None if all went fine
    notices: int = 0  # parts that got the plan's notice


# Rewriting inside these would break a signature, or cannot work on ciphertext.
_SEALED_TYPES = ("multipart/signed", "multipart/encrypted", "application/pkcs7-mime")
# With surrogateescape these decode and encode back any bytes unchanged; others are checked.
_LOSSLESS_CODECS = ("utf-8", "ascii", "iso8859-1")
_IDENTITY_CTES = ("7bit", "8bit", "binary", "7bits", "8bits")  # "8bits": a typo seen in real mail
_FIELDS = ("content-type", "content-transfer-encoding", "content-disposition", "dkim-signature", "list-unsubscribe")
_HEADER_LINE = re.compile(r"[\041-\071\073-\176]*:")  # as email.feedparser.headerRE
_BLANK_LINE = re.compile(rb"\n\r?\n")
# Without these words in its header block, a part is none of the types _visit acts on
# (compat32 compares the literal type, so folding or comments cannot hide one).
_MAY_MATTER = re.compile(rb"text/html|multipart|pkcs7", re.I)
_DELIMITER_TAIL = re.compile(rb"(--)?[ \t]*(?:\r\n|\r|\n|\Z)")  # after "--" + boundary
_BARE_LF = re.compile(rb"(?<!\r)\n")
_QP_TOKEN = re.compile(rb"=[0-9A-F]{2}|[^=]|=")  # an escape is never split by a soft break
_HARD_LF = re.compile(rb"\n(?<!=\n)(?<!=\r\n)")  # "=" before a line break makes it a soft one
_ANGLE_URL = re.compile(r"<([^<>]*)>")  # not "[^>]*": a run of "<" would be read again from each
_ASCII_WS = re.compile(r"[\t\n\r ]+")
_MAX_SMTP_LINE = 998
# Real mail nests a few levels; each level is a pass over its span, so depth costs time.
_MAX_DEPTH = 32
# Characters a token may have so that it can be swapped for another in encoded bytes:
# quoted-printable leaves every one of them as it is, wherever it stands.
_STAMPABLE = re.compile(r"[A-Za-z0-9_-]+")
_SOFT_BREAK = re.compile(rb"(=\r?\n)")


class _Unlocatable(Exception):
    """The raw bytes do not split into parts reliably (missing or reused boundaries...)."""


@dataclass(frozen=True)
class _Leaf:
    headers: Message  # the part's header block only
    is_html: bool  # else text/plain
    path: str  # "1" is the message itself, "1.2" its second child, as in the corpus manifest
    start: int  # the body is raw[start:end], without the line break that belongs to the boundary
    end: int


@dataclass(frozen=True)
class _Decoded:
    leaf: _Leaf
    original: bytes  # the body as found
    data: bytes  # transfer-decoded bytes
    text: str
    cte: str
    codec: str
    eol: bytes  # the message's line ending, for re-encoded lines


def rewrite_message(raw: bytes, plan: RewritePlan) -> RewriteResult:
    """Insert the pixel and rewrite links in every eligible part; never raises for bad input."""
    if not (plan.opens or plan.clicks):
        return RewriteResult(raw, (), False, None)
    try:
        return _rewrite_message(raw, plan)
    except Exception as exc:  # fail open: the tracker must never stop a mail
        return RewriteResult(raw, (), False, f"rewrite failed: {type(exc).__name__}: {exc}")


def rewrite_copies(raw: bytes, plans: Sequence[RewritePlan]) -> list[RewriteResult]:
    """One result per plan, as rewrite_message would give it, rewriting the message once.

    The copies of a message differ only in their token. The first plan's result is the
    template; another copy is the template with its token swapped in, where that gives
    provably the same bytes: tokens of equal length, made of characters quoted-printable
    never escapes (so soft line breaks fall in the same places), and the template's
    token found once per rewritten link and pixel (not hidden in base64). Otherwise
    that copy is rewritten on its own.
    """
    if not plans:
        return []
    first = rewrite_message(raw, plans[0])
    stamp = _stamper(raw, plans[0], first)
    results = [first]
    for plan in plans[1:]:
        if stamp is not None and _same_but_token(plan, plans[0]):
            results.append(replace(first, data=stamp(plan.token.encode())))
        else:
            results.append(rewrite_message(raw, plan))
    return results


def _stamper(raw: bytes, plan: RewritePlan, result: RewriteResult) -> Callable[[bytes], bytes] | None:
    """A function putting another token in place of the plan's in the result; None if the
    token cannot be swapped safely."""
    if not _STAMPABLE.fullmatch(plan.token):
        return None
    token, data = plan.token.encode(), result.data
    per_notice = {plan.notice_text.count(plan.token), plan.notice_html.count(plan.token)}
    if len(per_notice) > 1:  # which parts got which notice is not counted: rewrite each copy
        return None
    places = _token_places(data, token)
    expected = len(result.links) + int(result.pixel) + result.notices * per_notice.pop()
    if _token_places(raw, token) or len(places) != expected:
        return None

    def stamp(new: bytes) -> bytes:
        out, at = [], 0
        for start, end in places:
            out += (data[at:start], _swap(data[start:end], new))
            at = end
        out.append(data[at:])
        return b"".join(out)

    return stamp


def _token_places(data: bytes, token: bytes) -> list[tuple[int, int]]:
    """(start, end) of each token in data, also where soft line breaks cut it (no regex
    compiled per token: that was a fifth of a rewrite worker's time)."""
    pieces = _SOFT_BREAK.split(data)  # text, break, text, break, ..., text
    texts = pieces[0::2]
    text = b"".join(texts)
    text_starts, data_starts, t, d = [], [], 0, 0
    for i, piece in enumerate(texts):
        text_starts.append(t)
        data_starts.append(d)
        t += len(piece)
        d += len(piece) + (len(pieces[2 * i + 1]) if 2 * i + 1 < len(pieces) else 0)

    def in_data(offset: int) -> int:
        i = bisect.bisect_right(text_starts, offset) - 1
        return data_starts[i] + offset - text_starts[i]

    places, at = [], text.find(token)
    while at >= 0:
        places.append((in_data(at), in_data(at + len(token) - 1) + 1))
        at = text.find(token, at + len(token))
    return places


def _swap(found: bytes, token: bytes) -> bytes:
    """found: a token, perhaps cut by soft line breaks; the new token, cut the same way."""
    if len(found) == len(token):
        return token
    out, at = [], 0
    for piece in _SOFT_BREAK.split(found):
        if piece.startswith(b"="):
            out.append(piece)
        else:
            out.append(token[at : at + len(piece)])
            at += len(piece)
    return b"".join(out)


def _same_but_token(plan: RewritePlan, first: RewritePlan) -> bool:
    if len(plan.token) != len(first.token) or not _STAMPABLE.fullmatch(plan.token):
        return False
    swapped = replace(plan, token=first.token, pixel_url=plan.pixel_url.replace(plan.token, first.token),
                      click_base=plan.click_base.replace(plan.token, first.token),
                      notice_text=plan.notice_text.replace(plan.token, first.token),
                      notice_html=plan.notice_html.replace(plan.token, first.token))
    return swapped == first


def _rewrite_message(raw: bytes, plan: RewritePlan) -> RewriteResult:
    try:
        root, body_start = _read_headers(raw, 0, len(raw), "1")
    except _Unlocatable as exc:
        return RewriteResult(raw, (), False, f"malformed MIME: {exc}")
    if not plan.allow_dkim_signed and root.get("DKIM-Signature") is not None:
        return RewriteResult(raw, (), False, "dkim-signed")
    reasons: list[str] = []
    leaves: list[_Leaf] = []
    with_text = (plan.clicks and plan.text_links) or bool(plan.notice_text)
    try:
        _visit(raw, root, "1", body_start, len(raw), with_text, leaves, reasons)
    except _Unlocatable as exc:
        return RewriteResult(raw, (), False, f"malformed MIME: {exc}")
    leaves.sort(key=lambda leaf: not leaf.is_html)  # link positions: HTML parts first, then text
    unsubscribe_urls = _list_unsubscribe_urls(root)
    splices: list[tuple[int, int, bytes]] = []
    links: list[Link] = []
    pixel = False
    notices = 0
    for leaf in leaves:
        decoded = _decode(raw, leaf)
        if isinstance(decoded, str):
            reasons.append(decoded)
            continue
        first = len(links)
        notice = _notice(decoded, plan.notice_html if leaf.is_html else plan.notice_text, reasons)
        if leaf.is_html:
            text, new_links, new_pixel = rewrite_html(
                decoded.text, plan, first_position=first, unsubscribe_urls=unsubscribe_urls,
                notice=with_line_breaks(notice, _newline(decoded)) if notice else "",
            )
        else:
            text, new_links = rewrite_text(decoded.text, plan, first_position=first, unsubscribe_urls=unsubscribe_urls)
            if notice:
                text = after_text(text, notice, _newline(decoded))
            new_pixel = False
        if text == decoded.text:
            continue
        body = _encode(decoded, text)
        if isinstance(body, str):
            reasons.append(body)
            continue
        splices.append((leaf.start, leaf.end, body))
        links.extend(new_links)
        pixel = pixel or new_pixel
        notices += bool(notice)
    skipped = "; ".join(reasons) or None
    if not splices:
        return RewriteResult(raw, (), False, skipped)
    return RewriteResult(_splice(raw, splices), tuple(links), pixel, skipped, notices)


def _notice(decoded: _Decoded, notice: str, reasons: list[str]) -> str:
    """The notice, if the part's charset and transfer encoding can carry it; else "" and why."""
    if not notice:
        return ""
    path, charset = decoded.leaf.path, decoded.leaf.headers.get_content_charset() or "us-ascii"
    try:
        notice.encode(decoded.codec)
    except UnicodeEncodeError:
        reasons.append(f"notice left out of part {path}: not writable in its charset {charset}")
        return ""
    if decoded.cte in ("7bit", "7bits") and not notice.isascii():
        reasons.append(f"notice left out of part {path}: not ASCII, and the part is 7bit")
        return ""
    return notice


def _newline(decoded: _Decoded) -> str:
    """The part's own line break: as in its text, else as in the message."""
    if "\r\n" in decoded.text:
        return "\r\n"
    return "\n" if "\n" in decoded.text else decoded.eol.decode("ascii")


def _body_start(raw: bytes, start: int, end: int) -> int:
    if raw.startswith(b"\n", start):  # a part without headers
        return start + 1
    if raw.startswith(b"\r\n", start):
        return start + 2
    blank = _BLANK_LINE.search(raw, start, end)
    return blank.end() if blank else end


def _read_headers(raw: bytes, start: int, end: int, path: str) -> tuple[Message, int]:
    """The header fields this module reads, and where the part's body starts.

    Done as email.feedparser does it (its header-line test, then compat32's own
    header_source_parse and set_raw), minus its per-message machinery, which costs
    more than the few fields read here.
    """
    body_start = _body_start(raw, start, end)
    headers = Message(policy=compat32)
    field: list[str] = []
    for raw_line in raw[start:body_start].splitlines(keepends=True):  # at CR, LF or CRLF only
        line = raw_line.decode("ascii", "surrogateescape")
        if line[0] in " \t":  # a continuation (the stdlib ignores one on the first line)
            if field:
                field.append(line)
            continue
        if field:
            headers.set_raw(*compat32.header_source_parse(field))
            field = []
        if line[0] in "\r\n" or line.startswith("From "):  # the blank line; an mbox envelope
            continue
        if not _HEADER_LINE.match(line):  # the stdlib ends the header block here, early
            raise _Unlocatable(f"no blank line after the headers of part {path}")
        if line[: line.find(":")].lower() in _FIELDS:
            field = [line]
    if field:
        headers.set_raw(*compat32.header_source_parse(field))
    return headers, body_start


def _visit(
    raw: bytes,
    headers: Message,
    path: str,
    start: int,
    end: int,
    with_text: bool,
    leaves: list[_Leaf],
    reasons: list[str],
) -> None:
    """Collect the HTML (and, if asked, plain-text) bodies of a part that may be rewritten."""
    ctype = headers.get_content_type()
    maintype = ctype.partition("/")[0]
    if ctype in _SEALED_TYPES:
        reasons.append(f"{ctype} part {path} left as is")
    elif maintype == "message" or headers.get_content_disposition() == "attachment":
        pass  # attachments, attached and reported messages are not ours to change
    elif maintype == "multipart":
        if path.count(".") >= _MAX_DEPTH:
            raise _Unlocatable(f"multipart parts nested more than {_MAX_DEPTH} deep")
        # Children are cut out of their parent's span, so an inner multipart that reuses an
        # outer boundary finds no delimiter of its own and the message stays as it is.
        boundary = _boundary(headers, path)
        for i, (child_start, child_end) in enumerate(_child_spans(raw, start, end, boundary, path), 1):
            child_path = f"{path}.{i}"
            if not with_text and not _MAY_MATTER.search(raw, child_start, _body_start(raw, child_start, child_end)):
                continue  # an image, a text/plain alternative...: no need to parse its headers
            child, body_start = _read_headers(raw, child_start, child_end, child_path)
            if ctype == "multipart/digest":
                child.set_default_type("message/rfc822")
            _visit(raw, child, child_path, body_start, child_end, with_text, leaves, reasons)
    elif ctype == "text/html" or (with_text and ctype == "text/plain"):
        leaves.append(_Leaf(headers, ctype == "text/html", path, start, end))


def _boundary(headers: Message, path: str) -> bytes:
    boundary = headers.get_boundary()
    if not boundary:
        raise _Unlocatable(f"multipart part {path} has no boundary")
    try:
        return boundary.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        raise _Unlocatable(f"boundary of part {path} is not ASCII") from None


def _child_spans(raw: bytes, start: int, end: int, boundary: bytes, path: str) -> list[tuple[int, int]]:
    """Spans of a multipart body's children, cut as email.feedparser cuts them."""
    dash_boundary = b"--" + boundary
    spans: list[tuple[int, int]] = []
    part_start = None
    at = raw.find(dash_boundary, start, end)
    while at >= 0:
        tail = _DELIMITER_TAIL.match(raw, at + len(dash_boundary), end)
        if tail is None or (at > 0 and raw[at - 1] != 0x0A):  # a delimiter is a whole line
            at = raw.find(dash_boundary, at + 1, end)
            continue
        # The line break before a delimiter belongs to it; a repeated delimiter makes no part.
        if part_start is not None and at > part_start:
            spans.append((part_start, _strip_eol(raw, part_start, at)))
        if tail.group(1):
            if not spans:
                raise _Unlocatable(f"multipart part {path} has no parts")
            return spans
        part_start = tail.end()
        at = raw.find(dash_boundary, part_start, end)
    what = "no final boundary" if part_start is not None else "no boundary line"
    raise _Unlocatable(f"multipart part {path} has {what}")


def _strip_eol(raw: bytes, start: int, end: int) -> int:
    if end - start >= 2 and raw[end - 2 : end] == b"\r\n":
        return end - 2
    if end > start and raw[end - 1] in b"\r\n":
        return end - 1
    return end


def _decode(raw: bytes, leaf: _Leaf) -> _Decoded | str:
    """The part's text, or why it stays as it is."""
    headers, path = leaf.headers, leaf.path
    body = raw[leaf.start : leaf.end]
    # Parameters after the value ("quoted-printable;") are ignored, as by policy.default.
    cte = (headers.get("Content-Transfer-Encoding") or "").split(";")[0].strip().lower() or "7bit"
    charset = headers.get_content_charset() or "us-ascii"  # RFC 2045's default for text/*
    codec = _codec(charset)
    if codec is None:
        return f"unknown charset {charset} in part {path}"
    try:
        if cte in _IDENTITY_CTES:
            data = body
        elif cte == "quoted-printable":
            data = binascii.a2b_qp(body)
        elif cte == "base64":
            data = binascii.a2b_base64(b"".join(body.split()), strict_mode=True)
        else:
            return f"unknown transfer encoding {cte} in part {path}"
    except (binascii.Error, ValueError):
        return f"undecodable {cte} body in part {path}"
    # surrogateescape carries stray bytes through untouched; the round trip proves it.
    text = data.decode(codec, "surrogateescape")
    if codec not in _LOSSLESS_CODECS and text.encode(codec, "surrogateescape") != data:
        return f"{charset} text of part {path} does not round-trip"
    eol = b"\r\n" if b"\r\n" in (body if b"\n" in body else raw) else b"\n"
    return _Decoded(leaf, body, data, text, cte, codec, eol)


def _encode(decoded: _Decoded, text: str) -> bytes | str:
    """The new body in the part's own charset and transfer encoding, or why that fails."""
    path = decoded.leaf.path
    try:
        data = text.encode(decoded.codec, "surrogateescape")
    except UnicodeEncodeError:
        return f"rewritten part {path} cannot be encoded as {decoded.codec}"
    if decoded.cte == "quoted-printable":
        out = _requote_changed_lines(decoded, data)
        if out is None or binascii.a2b_qp(out) != data:
            out = _quoted_printable(data, decoded.eol)
            if binascii.a2b_qp(out) != data:
                return f"quoted-printable of part {path} cannot be re-encoded exactly"
        return out
    if decoded.cte == "base64":
        return _base64_like(decoded.original, data, decoded.eol)
    if _longest_line(data) > max(_MAX_SMTP_LINE, _longest_line(decoded.data)):
        return f"rewritten part {path} would exceed the SMTP line limit"
    return data


def _codec(charset: str) -> str | None:
    for name in (charset, charset.removeprefix("x-")):  # "x-mac-cyrillic" is Python's mac-cyrillic
        try:
            return codecs.lookup(name).name
        except LookupError:
            continue
    return None


def _requote_changed_lines(decoded: _Decoded, data: bytes) -> bytes | None:
    """Quoted-printable that keeps the original encoding of every line that did not change.

    Faster than encoding the whole body, and the diff stays as small as the edit.
    None when the original's hard lines do not map one to one onto the text's lines
    (an encoded =0A, say); the caller then encodes the whole body.
    """
    groups = _HARD_LF.split(decoded.original)
    old_lines = decoded.data.split(b"\n")
    new_lines = data.split(b"\n")
    if not len(groups) == len(old_lines) == len(new_lines):
        return None
    eol = decoded.eol
    encoded: list[bytes] = []

    def encode(line: bytes) -> bytes:
        encoded.append(_quoted_printable_line(line, eol))
        return encoded[-1]

    out = b"\n".join([group if old == new else encode(new) for group, old, new in zip(groups, old_lines, new_lines)])
    # binascii lets a line run to 77 or 78 now and then; the whole-body path fixes that.
    if max(map(len, b"\n".join(encoded).replace(b"\r", b"").split(b"\n")), default=0) > 76:
        return None
    return out


def _quoted_printable_line(line: bytes, eol: bytes) -> bytes:
    """One hard line (split at LF, so a CRLF line still ends with CR), soft-broken at 76."""
    cr = b"\r" if eol == b"\r\n" and line.endswith(b"\r") else b""
    content = line[: len(line) - len(cr)]
    encoded = binascii.b2a_qp(content, istext=b"\r" not in content)  # no LF inside: soft breaks are LF
    return (encoded if eol == b"\n" else encoded.replace(b"\n", eol)) + cr


def _quoted_printable(data: bytes, eol: bytes) -> bytes:
    """Quoted-printable with soft breaks (lines <= 76) and line breaks in the message's style."""
    if eol == b"\r\n":
        plain_breaks = data.count(b"\n") == data.count(b"\r\n") == data.count(b"\r")
    else:
        plain_breaks = b"\r" not in data
    # Text whose line breaks differ from the message's (an LF mail carrying CRLF
    # HTML as =0D=0A) is encoded as binary, so those breaks stay encoded.
    out = _b2a_qp(data, istext=plain_breaks)
    if eol == b"\r\n":
        return _BARE_LF.sub(b"\r\n", out)
    return out.replace(b"\r\n", b"\n")


def _b2a_qp(data: bytes, *, istext: bool) -> bytes:
    out = binascii.b2a_qp(data, istext=istext)
    if len(out) <= 76 or max(map(len, out.split(b"\n"))) <= 76:
        return out
    # binascii lets some lines run to 77 or 78 (an escaped trailing space, a "=0A" near
    # the end); RFC 2045 allows 76, so those are broken once more.
    return b"\n".join(_rewrap_qp_line(line) if len(line.rstrip(b"\r")) > 76 else line for line in out.split(b"\n"))


def _rewrap_qp_line(line: bytes) -> bytes:
    cr = b"\r" if line.endswith(b"\r") else b""
    chunks, current = [], b""
    for token in _QP_TOKEN.findall(line[: len(line) - len(cr)]):
        if len(current) + len(token) > 75:  # room for the soft break's "="
            chunks.append(current + b"=" + cr)
            current = b""
        current += token
    chunks.append(current + cr)
    return b"\n".join(chunks)


def _base64_like(original: bytes, data: bytes, eol: bytes) -> bytes:
    """base64 with the original's line length and final line break."""
    stripped = original.strip()
    first = stripped.split(b"\n", 1)[0].rstrip(b"\r")
    encoded = binascii.b2a_base64(data, newline=False)
    if b"\n" not in stripped:
        width = max(len(encoded), 1)  # one line stays one line
    elif 0 < len(first) <= 76 and len(first) % 4 == 0:
        width = len(first)
    else:
        width = 76
    out = eol.join(encoded[i : i + width] for i in range(0, len(encoded), width))
    return out + eol if original.endswith((b"\n", b"\r")) else out


def _longest_line(data: bytes) -> int:
    return max(map(len, data.splitlines()), default=0)


def _list_unsubscribe_urls(headers: Message) -> frozenset[str]:
    urls = set()
    for value in headers.get_all("List-Unsubscribe") or []:
        for target in _ANGLE_URL.findall(str(value)):
            urls.add(_ASCII_WS.sub("", target))  # RFC 2369: whitespace inside <> is ignored
    return frozenset(urls)


def _splice(raw: bytes, splices: list[tuple[int, int, bytes]]) -> bytes:
    out: list[bytes] = []
    pos = 0
    for start, end, body in sorted(splices):
        out.append(raw[pos:start])
        out.append(body)
        pos = end
    out.append(raw[pos:])
    return b"".join(out)
