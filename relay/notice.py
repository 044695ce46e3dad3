"""The notice tracked copies carry: the configured disclosure and the opt-out line. No I/O.

The text and HTML forms are made once per copy (only the opt-out URL differs) with
"\\n" line breaks; the rewriter puts them in each part with the part's own line
breaks. The HTML form is ASCII (other characters become character references), so it
fits a part in any charset and any transfer encoding.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from html.parser import HTMLParser

# Mail lines are limited to 998 bytes (RFC 5322); the notice's lines stay well under, so
# the line they are appended to keeps room (a part whose lines grow too long stays as is).
MAX_LINE_BYTES = 900
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_BLOCK_STYLE = "margin:16px 0 0 0;font-size:12px;line-height:1.4;color:#666666;"
# elements whose content is not markup (or which end the document): in a fragment appended
# near </body> they would swallow the pixel and the rest of the part
_FORBIDDEN_TAGS = frozenset({"script", "style", "title", "textarea", "iframe", "xmp", "noembed", "noframes",
                             "noscript", "plaintext", "template", "html", "head", "body"})


@dataclass(frozen=True)
class Notice:
    text: str  # for text/plain parts; "" for none
    html: str  # for text/html parts; "" for none

    def __bool__(self) -> bool:
        return bool(self.text or self.html)


def copy_notice(*, disclosure_text: str, disclosure_html: str, optout_url: str, relay: str) -> Notice:
    """The notice of one copy: the disclosure (the HTML one, else the text one escaped), then,
    if optout_url is given, a line saying who tracks the mail and where to stop it."""
    text_lines, html_lines = [], []
    disclosure_text, disclosure_html = _lines(disclosure_text), _html_disclosure(disclosure_text, disclosure_html)
    if disclosure_text:
        text_lines.append(disclosure_text)
    if disclosure_html:
        html_lines += [f'<div style="{_BLOCK_STYLE}">', disclosure_html, "</div>"]  # its lines stay its own
    if optout_url:
        text_lines.append(f"This message is tracked by {relay}. Stop tracking: {optout_url}")
        html_lines.append(_ascii(
            f'<div style="{_BLOCK_STYLE}">This message is tracked by {html.escape(relay)}. '
            f'<a href="{html.escape(optout_url)}" style="color:#666666;">Stop tracking</a></div>'))
    return Notice("\n".join(text_lines), "\n".join(html_lines))


def with_line_breaks(notice: str, newline: str) -> str:
    """The notice between line breaks of the part's own kind."""
    return newline + notice.replace("\n", newline) + newline


def after_text(text: str, notice: str, newline: str) -> str:
    """A plain-text body with the notice appended after an empty line; it ends as the body did,
    with a line break or without."""
    notice = notice.replace("\n", newline)
    if text.endswith(("\n", "\r")):
        return text + newline + notice + newline
    return text + newline + newline + notice


def problem(disclosure_text: str, disclosure_html: str) -> tuple[str, str] | None:
    """(key, why) if a configured disclosure could not go into mail as it is; None if it can."""
    for key, value in (("privacy.disclosure_text", disclosure_text), ("privacy.disclosure_html", disclosure_html)):
        if _CONTROL.search(value):
            return key, "control characters are not allowed (only line breaks and tabs)"
    if disclosure_html.strip():
        why = _markup_problem(disclosure_html)
        if why:
            return "privacy.disclosure_html", why
    # the opt-out line stays far under the limit: the disclosure's lines decide, as they go
    # into mail (the HTML made from the text, escaped, grows)
    html_key = "privacy.disclosure_html" if disclosure_html.strip() else "privacy.disclosure_text"
    for key, lines in (("privacy.disclosure_text", _lines(disclosure_text)),
                       (html_key, _html_disclosure(disclosure_text, disclosure_html))):
        for number, line in enumerate(lines.split("\n"), 1):
            size = len(line.encode("utf-8"))
            if size > MAX_LINE_BYTES:
                return key, (f"line {number} is {size} bytes long in mail (at most {MAX_LINE_BYTES}): "
                             "break it into shorter lines")
    return None


def _html_disclosure(disclosure_text: str, disclosure_html: str) -> str:
    return _ascii(_lines(disclosure_html) or html.escape(_lines(disclosure_text)).replace("\n", "<br>\n"))


def _ascii(markup: str) -> str:
    """A fragment may be written in any language: its other characters become references."""
    return markup.encode("ascii", "xmlcharrefreplace").decode("ascii")


def _lines(value: str) -> str:
    """Trimmed, with "\\n" line breaks only."""
    return "\n".join(value.strip().splitlines())


class _Fragment(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.forbidden: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self._check(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self._check(tag)

    def handle_endtag(self, tag: str) -> None:
        self._check(tag)

    def _check(self, tag: str) -> None:
        if tag in _FORBIDDEN_TAGS and self.forbidden is None:
            self.forbidden = tag


def _markup_problem(fragment: str) -> str | None:
    parser = _Fragment()
    parser.feed(fragment + "</div>")  # as in mail: the block's </div> follows it
    if parser.forbidden:
        return f"<{parser.forbidden}> tags are not allowed in a notice appended to mail"
    if parser.rawdata:  # what the parser holds back: a quoted value or a comment left open
        return f"unterminated markup at {parser.rawdata.removesuffix('</div>')[:40]!r}"
    return None
