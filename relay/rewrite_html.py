"""Link and pixel rewriting of decoded HTML and plain text. No I/O.

The HTML is scanned with compiled regexes, never parsed and re-serialised: every
character outside the replaced href values, a removed data-notrack attribute and
the inserted pixel stays exactly as written (DESIGN invariant 3). Comments and
<script>/<style> contents are skipped, except the content of Outlook conditional
comments (<!--[if mso]> ... <![endif]-->), which Outlook renders but no HTML
parser looks into, so it gets a pass of its own.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import unescape
from html.entities import html5

__all__ = ["Link", "RewritePlan", "rewrite_html", "rewrite_text"]

PIXEL_POSITIONS = ("bottom", "top")


@dataclass(frozen=True)
class RewritePlan:
    opens: bool  # insert the pixel
    clicks: bool  # rewrite links
    pixel_url: str  # full URL of the pixel image
    click_base: str  # redirect URL for link n is f"{click_base}{n}"
    own_prefix: str  # public base URL; links already under it are left alone
    text_links: bool = False  # also rewrite bare http(s) URLs in text/plain parts
    pixel_position: str = "bottom"  # "bottom" (before </body>) or "top" (after <body>)
    allow_dkim_signed: bool = False  # if False, DKIM-signed mail goes out unmodified
    # the copy's token as it appears in pixel_url and click_base: lets the copies of one
    # message share a single rewrite (rewrite.rewrite_copies); "" if there is none
    token: str = ""
    # appended to text/plain and text/html parts (relay/notice.py), "\n" for line breaks
    notice_text: str = ""
    notice_html: str = ""

    def __post_init__(self) -> None:
        if self.pixel_position not in PIXEL_POSITIONS:
            raise ValueError(f"pixel_position must be one of {PIXEL_POSITIONS}, got {self.pixel_position!r}")


@dataclass(frozen=True)
class Link:
    position: int  # 0-based, document order over every rewritten link of the message
    url: str  # redirect target as the author meant it: entities decoded once


_WS = "\t\n\f\r "  # HTML's whitespace (str.strip() would also eat NBSP and friends)

# Rest of a tag after its name, by the HTML tokenizer's rules for attribute names and
# quoting: a name may start with a stray quote ('width="1""'), and once "=" follows a
# name a value must follow, so an unclosed quote leaves the tag unterminated, as in a
# browser. Possessive quantifiers: a tag without ">" fails fast instead of backtracking.
_VALUE = r"(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+(?:\"[^\"]*+\"|'[^']*+'|(?![\"'])[^\t\n\f\r >]*+)|(?![\t\n\f\r ]*+=))"
_TAG_REST = r"(?:[\t\n\f\r /]++|[^\t\n\f\r />][^\t\n\f\r /=>]*+" + _VALUE + r")*+"
_RAW_TEXT = ("script", "style", "title", "textarea", "xmp", "iframe", "noembed", "noframes")
_NAME_END = r"(?=[\t\n\f\r />])"
# Where a token that needs Python starts: a comment, </body>, or the start of a tag named
# in _WANTED. Looking for these alone, instead of tokenizing every tag, keeps the scan
# several times faster; _enclosing_tag() then tells a "<a" inside another tag's quoted
# attribute value from a real tag, and only then is the tag read (_TAG). Reading it in
# this search instead would read it again for each such "<a" in one long value: the
# search must never look past the tag's name, or the scan stops being linear.
_WANTED = r"(?i:a|area|body|img|" + "|".join(_RAW_TEXT) + r")" + _NAME_END + r"|(?i:v):"
_CANDIDATE = re.compile(r"<(?:!--|/(?i:body)" + _NAME_END + r"|(?P<wanted>" + _WANTED + r"))")
_COMMENT = re.compile(r"<!--(?:-?>|(?P<comment>.*?)(?:(?P<close>--!?>)|\Z))", re.S)  # "<!-->" is an empty one
# Complete tokens other than candidates: what may follow the last candidate. Where this
# stops short of the end, the document ends inside an unterminated tag.
_COMPLETE = re.compile(
    r"(?:[^<]++|<(?![A-Za-z/!?])|<(?:!|\?|/(?![A-Za-z]))[^>]*+>|</?[A-Za-z][^\t\n\f\r />]*+" + _TAG_REST + r">)*+"
)
_TAG_START = re.compile(r"</?[A-Za-z]")
_MARKUP_START = re.compile(r"<[A-Za-z/!?]")
_TAG = re.compile(r"<(?P<end>/?)(?P<name>[A-Za-z][^\t\n\f\r />]*+)(?P<attrs>" + _TAG_REST + r")>")
# One attribute: group 1 its name, 2, 3 or 4 its value ("double", 'single', unquoted).
_ATTR_NAME = r"([^\t\n\f\r />][^\t\n\f\r /=>]*+)"
_ATTR_VALUE = r"(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+(?:\"([^\"]*+)\"|'([^']*+)'|(?![\"'])([^\t\n\f\r >]*+)))?"
_ATTR = re.compile(_ATTR_NAME + _ATTR_VALUE)
# The first href attribute (same groups), the attributes before it skipped in the engine.
_OTHER_ATTR = r"(?!(?i:href)(?:[\t\n\f\r /=>]|\Z))[^\t\n\f\r />][^\t\n\f\r /=>]*+" + _VALUE
_HREF = re.compile(r"(?:[\t\n\f\r /]++|" + _OTHER_ATTR + r")*+" + r"([Hh][Rr][Ee][Ff])" + _ATTR_VALUE)
# Elements whose content is text, not markup: a "<a href" inside them is no link.
_RAW_END = {name: re.compile(rf"</{name}(?=[\t\n\f\r />])", re.I) for name in _RAW_TEXT}
# Spelt without re.I, so that the engine can jump to each "<" (re.I hides the prefix).
_A_TEXT_END = re.compile(r"</?[aA][\t\n\f\r />]")
_VML_TEXT_END = re.compile(r"</[vV]:")
_TAGS = re.compile(r"<[^>]*>?")
_DOCTYPE = re.compile(r"(?:[\t\n\f\r ]*<\?xml[^>]*>)?(?:[\t\n\f\r ]*<!doctype[^>]*>)?", re.I)
_LINK_TEXT_WINDOW = 4096
_TEXT_CONTEXT = 256  # how far back before a bare URL its "link text" is looked for

_CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")
_OPT_OUT = re.compile(r"\bopt[\s_-]?out\b")
_URL_TAB_NEWLINE = re.compile(r"[\t\n\r]")
_TEXT_URL = re.compile(r"https?://[^\s<>\"'`]+", re.I)
_TEXT_URL_TRAILER = ".,;:!?'\")]}"
_UNQUOTED_UNSAFE = re.compile(r"[\t\n\f\r \"'=<>`]")


def rewrite_html(
    html: str,
    plan: RewritePlan,
    *,
    first_position: int = 0,
    unsubscribe_urls: frozenset[str] = frozenset(),
    notice: str = "",
) -> tuple[str, tuple[Link, ...], bool]:
    """Decoded HTML in; (new HTML, rewritten links, pixel inserted) out. A notice goes where
    a bottom pixel goes: before </body>, else at the end."""
    scan = _Scan(html, plan, first_position, unsubscribe_urls)
    scan.run(0, len(html), top=True)
    scan.settle_vml_link(len(html))
    if notice:
        scan.edits.append((scan.bottom_offset(), 0, notice))
    pixel = False
    if plan.opens and not scan.has_pixel:
        scan.edits.append((scan.pixel_offset(), 0, _pixel_tag(plan.pixel_url)))
        pixel = True
    return _apply(html, scan.edits), tuple(scan.links), pixel


def rewrite_text(
    text: str,
    plan: RewritePlan,
    *,
    first_position: int = 0,
    unsubscribe_urls: frozenset[str] = frozenset(),
) -> tuple[str, tuple[Link, ...]]:
    """Bare http(s) URLs of a text/plain body become click redirects (if the plan tracks
    them: a part may be visited for its notice alone, relay/rewrite.py)."""
    edits: list[tuple[int, int, str]] = []
    links: list[Link] = []
    own = _own_prefix(plan)
    urls = _TEXT_URL.finditer(text) if plan.clicks and plan.text_links else ()
    for m in urls:
        url = _trim_text_url(m.group())
        start = m.start()
        # The words just before a URL (this line and the previous one, within a window
        # that keeps a long line of URLs linear) are its "link text".
        since = max(0, start - _TEXT_CONTEXT)
        line_start = text.rfind("\n", since, start) + 1 or since
        previous_line_start = text.rfind("\n", since, line_start - 1) + 1 or since
        context = text[previous_line_start:start]
        if not _trackable(url, own, unsubscribe_urls) or _says_unsubscribe(context):
            continue
        position = first_position + len(links)
        links.append(Link(position, url))
        edits.append((start, len(url), f"{plan.click_base}{position}"))
    return _apply(text, edits), tuple(links)


def unescape_attribute(value: str) -> str:
    """Decode character references the way a browser does inside an attribute value.

    Unlike html.unescape, a legacy reference without ';' followed by '=' or an
    alphanumeric stays literal, so "?a=1&region=eu" keeps its "&reg".
    """
    if "&" not in value:
        return value
    if value.count("&") == value.count("&amp;"):  # the usual case: query strings
        return value.replace("&amp;", "&")
    return _CHARREF.sub(_attribute_charref, value)


def _attribute_charref(m: re.Match[str]) -> str:
    ref = m.group(1)
    if ref[0] == "#" or ref in html5:
        return unescape(m.group())
    for cut in range(len(ref) - 1, 1, -1):
        if ref[:cut] in html5:
            if ref[cut] == "=" or ref[cut].isalnum():
                break
            return html5[ref[:cut]] + ref[cut:]
    return m.group()


def clean_url(value: str) -> str:
    """The URL a browser follows for an href: entities decoded, tabs and newlines dropped."""
    url = unescape_attribute(value).strip(_WS)
    return _URL_TAB_NEWLINE.sub("", url) if "\n" in url or "\t" in url or "\r" in url else url


@dataclass
class _Scan:
    html: str
    plan: RewritePlan
    first_position: int
    unsubscribe_urls: frozenset[str]
    edits: list[tuple[int, int, str]] = field(default_factory=list)  # (offset, length, new text)
    links: list[Link] = field(default_factory=list)
    has_pixel: bool = False
    body_open_end: int | None = None
    body_close_start: int | None = None
    open_end: int | None = None  # where an unterminated tag, comment or <script> swallows the rest
    # a VML link whose text ends at the next link at the latest: (tag, href, url, end of its run)
    pending_vml: tuple[re.Match[str], re.Match[str], str, int] | None = None

    def __post_init__(self) -> None:
        self.own = _own_prefix(self.plan)
        self.pixel_prefix = self.own + "/o/"

    def run(self, start: int, end: int, *, top: bool) -> None:
        html = self.html
        pos = start
        search = _CANDIDATE.search
        while (candidate := search(html, pos, end)) is not None:
            at = candidate.start()
            gt = html.rfind(">", pos, at)
            # Markup opened since the last ">" may hold the candidate in an attribute value.
            enclosing = _enclosing_tag(html, gt + 1 if gt >= 0 else pos, at, end) if html.find(
                "<", gt + 1 if gt >= 0 else pos, at) >= 0 else None
            if enclosing is not None:
                if enclosing[1] < 0:  # the rest of the input is inside an unterminated tag
                    if top:
                        self.open_end = enclosing[0]
                    return
                pos = enclosing[1]
                continue
            if candidate.group("wanted") is not None:
                m = _TAG.match(html, at, end)
                if m is None:  # no ">": the rest is in the tag, as in a browser
                    if top:
                        self.open_end = at
                    return
            elif html.startswith("<!--", at):
                m = _COMMENT.match(html, at, end)
                pos = m.end()
                comment = m.group("comment")
                # Inside a comment, a comment cannot end before the outer one: no deeper pass.
                if top and comment is not None and comment.lstrip(_WS)[:3].lower() == "[if":
                    self.run(m.start("comment"), m.end("comment"), top=False)
                if comment is not None and m.group("close") is None and top:
                    self.open_end = at
                continue
            else:  # </body>
                m = _TAG.match(html, at, end)
                if m is None:
                    if top:
                        self.open_end = at
                    return
                if top:
                    self.body_close_start = at
                pos = m.end()
                continue
            pos = m.end()
            name = m.group("name").lower()
            if name in _RAW_END:
                close = _RAW_END[name].search(html, pos, end)
                if close is None and top:
                    self.open_end = at
                pos = close.start() if close else end
            elif name == "a" or name == "area" or name.startswith("v:"):
                self._link(m, name, end)
            elif name == "img":  # of the images, only our own pixel matters
                if html.find(self.pixel_prefix, m.start("attrs"), m.end("attrs")) >= 0:
                    src = _attrs(html, m).get("src")
                    if src is not None and clean_url(_value(src)).startswith(self.pixel_prefix):
                        self.has_pixel = True
            elif name == "body" and top and self.body_open_end is None:
                self.body_open_end = pos
        if top and self.open_end is None and self.body_close_start is None:
            tail = _COMPLETE.match(html, pos, end).end()
            self.open_end = tail if tail < end else None

    def pixel_offset(self) -> int:
        if self.plan.pixel_position == "top":
            if self.body_open_end is not None:
                return self.body_open_end
            # Markup before the doctype would switch browsers to quirks mode.
            return _DOCTYPE.match(self.html).end()
        return self.bottom_offset()

    def bottom_offset(self) -> int:
        if self.body_close_start is not None:
            return self.body_close_start
        # At the end, unless the document ends inside a tag or comment that would hide it.
        return self.open_end if self.open_end is not None else len(self.html)

    def _link(self, m: re.Match[str], name: str, end: int) -> None:
        html = self.html
        if "data-notrack" in m.group("attrs").lower() and self._drop_notrack(m):
            return
        if not self.plan.clicks:
            return
        href = _HREF.match(html, m.start("attrs"), m.end("attrs"))
        if href is None:
            return
        url = clean_url(_value(href))
        if not _trackable(url, self.own, self.unsubscribe_urls):
            return
        self.settle_vml_link(m.start())
        if name.startswith("v:"):
            # VML has no closing tag that surely ends a link's text: it ends at the next
            # link at the latest, so that no text is read again for each link of a long run.
            self.pending_vml = (m, href, url, end)
            return
        if not self._text_says_unsubscribe(m, name, end):
            self._add_link(href, url)

    def settle_vml_link(self, next_link: int) -> None:
        """Track the pending VML link unless its text, up to next_link, says unsubscribe."""
        if self.pending_vml is None:
            return
        m, href, url, end = self.pending_vml
        self.pending_vml = None
        if not self._text_says_unsubscribe(m, "v:", min(end, next_link)):
            self._add_link(href, url)

    def _add_link(self, href: re.Match[str], url: str) -> None:
        position = self.first_position + len(self.links)
        self.links.append(Link(position, url))
        self.edits.append(_replace_value(href, f"{self.plan.click_base}{position}"))

    def _drop_notrack(self, m: re.Match[str]) -> bool:
        """Remove every data-notrack attribute of the tag; True if there was one."""
        found = False
        for attr in _ATTR.finditer(self.html, m.start("attrs"), m.end("attrs")):
            if attr.group(1).lower() == "data-notrack":
                found = True
                start = attr.start()
                while self.html[start - 1] in " \t":  # keep line breaks: line count stays the same
                    start -= 1
                self.edits.append((start, attr.end() - start, ""))
        return found

    def _text_says_unsubscribe(self, m: re.Match[str], name: str, end: int) -> bool:
        """Whether the link's text (an <area>'s alt) says unsubscribe or opt out."""
        if name == "area":
            alt = _attrs(self.html, m).get("alt")
            return alt is not None and _says_unsubscribe(unescape_attribute(_value(alt)))
        stop = min(end, m.end() + _LINK_TEXT_WINDOW)
        close = (_A_TEXT_END if name == "a" else _VML_TEXT_END).search(self.html, m.end(), stop)
        text = self.html[m.end() : close.start() if close else stop]
        if "<" in text:  # "<b>Un</b>subscribe"
            text = _TAGS.sub("", text)
        return _says_unsubscribe(unescape(text) if "&" in text else text)


def _enclosing_tag(html: str, since: int, at: int, end: int) -> tuple[int, int] | None:
    """(start, end or -1 if unterminated) of the tag or bogus comment that contains `at`.

    As in "<img alt='<a href=x>'>". Only markup opened since the last ">" before `at` is
    considered (the first opened there holds the rest): cheap, and right unless a quoted
    ">" and a quoted "<a" share one attribute value.
    """
    opened = _MARKUP_START.search(html, since, at)
    if opened is None:
        return None
    lt = opened.start()
    if _TAG_START.match(html, lt):
        tag = _TAG.match(html, lt, end)
        if tag is None:
            return lt, -1
        return (lt, tag.end()) if tag.end() > at else None
    if html.startswith(("<!", "<?", "</"), lt):  # a bogus comment, up to the next ">"
        close = html.find(">", at, end)
        return lt, (close + 1 if close >= 0 else -1)
    return None


def _attrs(html: str, m: re.Match[str]) -> dict[str, re.Match[str]]:
    found: dict[str, re.Match[str]] = {}
    for attr in _ATTR.finditer(html, m.start("attrs"), m.end("attrs")):
        found.setdefault(attr.group(1).lower(), attr)
    return found


def _value(attr: re.Match[str]) -> str:
    double, single, unquoted = attr.group(2, 3, 4)
    return double if double is not None else single if single is not None else unquoted or ""


def _replace_value(attr: re.Match[str], url: str) -> tuple[int, int, str]:
    """Edit that puts url into the attribute, keeping the author's quoting where it can."""
    text = url.replace("&", "&amp;")
    if attr.group(2) is not None:
        return attr.start(2), len(attr.group(2)), text.replace('"', "&quot;")
    if attr.group(3) is not None:
        return attr.start(3), len(attr.group(3)), text.replace("'", "&#39;")
    if attr.group(4) is not None and text and not _UNQUOTED_UNSAFE.search(text):
        return attr.start(4), len(attr.group(4)), text
    # A value that cannot stay unquoted: write the whole attribute anew, quoted.
    return attr.start(1), attr.end() - attr.start(1), 'href="' + text.replace('"', "&quot;") + '"'


def _trackable(url: str, own: str, unsubscribe_urls: frozenset[str]) -> bool:
    lower = url.lower()
    if not lower.startswith(("http://", "https://")):
        return False  # mailto:, tel:, #anchor, data:, javascript:, cid:, empty, scheme-less
    if url.startswith(own) and url[len(own) : len(own) + 1] in ("", "/", "?", "#"):
        return False  # already ours (a second run, or the sender's own tracked link)
    if url in unsubscribe_urls or _lower_says_unsubscribe(lower) or _is_template(url):
        return False
    if not url.isascii():
        try:
            url.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes carried as surrogates: no URL to store
            return False
    return True


def _is_template(url: str) -> bool:
    """A placeholder the sending application forgot to fill: {{x}}, {%x%}, ${x}, *|X|*, <%x%>."""
    if ("{" in url or "}" in url) and ("{{" in url or "}}" in url or "{%" in url or "%}" in url or "${" in url):
        return True
    return ("*" in url and ("*|" in url or "|*" in url)) or "<%" in url or "%>" in url


def _says_unsubscribe(text: str) -> bool:
    """Unsubscribe / opt out / opt-out / leiratkozás (Hungarian), in any case."""
    return _lower_says_unsubscribe(text.lower())


def _lower_says_unsubscribe(text: str) -> bool:
    return "unsub" in text or "leiratkoz" in text or ("opt" in text and _OPT_OUT.search(text) is not None)


def _own_prefix(plan: RewritePlan) -> str:
    return plan.own_prefix.rstrip("/")


def _trim_text_url(url: str) -> str:
    end, opened, closed = len(url), url.count("("), url.count(")")
    while end and url[end - 1] in _TEXT_URL_TRAILER:
        if url[end - 1] == ")":
            if opened >= closed:
                break  # "https://en.wikipedia.org/wiki/Mail_(band)" keeps its parenthesis
            closed -= 1
        end -= 1
    return url[:end]


def _pixel_tag(pixel_url: str) -> str:
    src = pixel_url.replace("&", "&amp;").replace('"', "&quot;")
    return (
        f'<img src="{src}" width="1" height="1" alt="" border="0" '
        'style="display:none;width:1px;height:1px;border:0;margin:0;padding:0;" />'
    )


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    if not edits:
        return text
    out: list[str] = []
    pos = 0
    for start, length, new in sorted(edits, key=lambda e: (e[0], e[1])):
        out.append(text[pos:start])
        out.append(new)
        pos = start + length
    out.append(text[pos:])
    return "".join(out)
