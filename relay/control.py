"""Per-message tracking controls: read them from a raw message and strip them before it leaves.

Pure: bytes in, values or bytes out. No I/O, and the message is never re-serialised
with the ``email`` package: only the header block (up to the first empty line) is
scanned, and only the control header fields and the Subject tags change. Header bytes
are handled as latin-1, so raw 8-bit bytes survive untouched.

Controls (DESIGN "Per-message control"):

* ``X-Track:`` comma- or space-separated words, case-insensitive: ``on``/``all``/``yes``
  (opens and clicks), ``opens``, ``clicks``, ``off``/``none``/``no``. It is a complete
  statement: ``X-Track: opens`` means opens only, ``opens, clicks`` both. Positive words
  win over ``off`` words in the same header; unknown words are ignored; several X-Track
  fields are read as one list. With no known word the header counts as absent.
* Aliases, read only when X-Track says nothing, as Mailgun and Postmark define them:
  ``X-Mailgun-Track: yes|no|htmlonly`` (both dimensions), ``X-Mailgun-Track-Opens: yes|no``,
  ``X-Mailgun-Track-Clicks: yes|no|htmlonly``, ``X-PM-TrackOpens: true|false``,
  ``X-PM-TrackLinks: None|HtmlAndText|HtmlOnly|TextOnly``. Mailgun's ``yes`` for clicks
  rewrites links in text parts too (``htmlonly`` does not), so it sets ``text_links``.
  Text links are rewritten only together with HTML links, so Postmark's ``TextOnly``
  (text links, HTML links untouched) is read as ``clicks=False``: no link is tracked, which
  keeps the HTML links the sender asked to leave alone.
  These headers override one dimension each on those services, leaving the other to the
  account default; here too: an opens-only alias gives ``Choice(opens=X, clicks=None)``
  and the policy fills ``None`` from the next layer down (subject tag, sticky, default).
  The specific alias wins over ``X-Mailgun-Track`` for its dimension.
* Subject tags ``[track]`` / ``[notrack]``, case-insensitive, anywhere in any Subject
  field, also inside (or across) RFC 2047 encoded words. If both appear, ``[notrack]``
  wins: when a message contradicts itself, not tracking is the safe reading.
"""
from __future__ import annotations

import base64
import binascii
import codecs
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Choice:
    """What a message (or a stored default) asks for.

    ``None`` in ``opens`` or ``clicks`` means "this layer does not say"; :meth:`fill`
    takes that dimension from a lower-precedence layer. ``text_links`` belongs to the
    link dimension: it is only meaningful when ``clicks`` is not ``None``.
    """

    opens: bool | None
    clicks: bool | None
    text_links: bool = False

    @property
    def complete(self) -> bool:
        return self.opens is not None and self.clicks is not None

    def fill(self, lower: Choice | None) -> Choice:
        """This choice, with the dimensions it leaves open taken from ``lower``."""
        if lower is None or self.complete:
            return self
        opens = self.opens if self.opens is not None else lower.opens
        if self.clicks is not None:
            return Choice(opens, self.clicks, self.text_links)
        return Choice(opens, lower.clicks, lower.text_links)


ON = Choice(True, True)
OFF = Choice(False, False)


@dataclass(frozen=True)
class MessageControl:
    header: Choice | None = None        # X-Track, else the aliases merged; None if absent/unparseable
    subject_tag: Choice | None = None   # [track] -> ON, [notrack] -> OFF

    @property
    def explicit(self) -> bool:
        return self.header is not None or self.subject_tag is not None


X_TRACK = "x-track"
_MG_TRACK = "x-mailgun-track"
_MG_OPENS = "x-mailgun-track-opens"
_MG_CLICKS = "x-mailgun-track-clicks"
_PM_OPENS = "x-pm-trackopens"
_PM_LINKS = "x-pm-tracklinks"
CONTROL_HEADERS = frozenset({X_TRACK, _MG_TRACK, _MG_OPENS, _MG_CLICKS, _PM_OPENS, _PM_LINKS})

_TRACK_WORDS = {"on": ON, "all": ON, "yes": ON, "opens": Choice(True, False),
                "clicks": Choice(False, True), "off": OFF, "none": OFF, "no": OFF}
# Per alias: value (lower-case) -> Choice; both spellings of a boolean are accepted
# because the services' own APIs accept both.
_ALIAS_VALUES: dict[str, dict[str, Choice]] = {
    _MG_TRACK: {"yes": Choice(True, True, True), "true": Choice(True, True, True),
                "htmlonly": ON, "no": OFF, "false": OFF},
    _MG_OPENS: {"yes": Choice(True, None), "true": Choice(True, None), "htmlonly": Choice(True, None),
                "no": Choice(False, None), "false": Choice(False, None)},
    _MG_CLICKS: {"yes": Choice(None, True, True), "true": Choice(None, True, True),
                 "htmlonly": Choice(None, True), "no": Choice(None, False), "false": Choice(None, False)},
    _PM_OPENS: {"true": Choice(True, None), "yes": Choice(True, None),
                "false": Choice(False, None), "no": Choice(False, None)},
    _PM_LINKS: {"none": Choice(None, False), "htmlandtext": Choice(None, True, True),
                "htmlonly": Choice(None, True), "textonly": Choice(None, False)},
}
# Order of precedence per dimension: specific aliases before Mailgun's catch-all.
_OPENS_ORDER = (_MG_OPENS, _PM_OPENS, _MG_TRACK)
_LINKS_ORDER = (_MG_CLICKS, _PM_LINKS, _MG_TRACK)


def parse_track_words(value: str) -> Choice | None:
    """The Choice an ``X-Track`` value states, or None when it has no known word."""
    opens = clicks = off = False
    for word in re.split(r"[\s,]+", value.lower()):
        choice = _TRACK_WORDS.get(word)
        if choice is None:
            continue
        if choice == OFF:
            off = True
        opens = opens or bool(choice.opens)
        clicks = clicks or bool(choice.clicks)
    if opens or clicks:
        return Choice(opens, clicks)
    return OFF if off else None


# --- header block scanning -------------------------------------------------------------

# A field name is printable ASCII without ':'; obsolete syntax allows blanks before the colon.
_FIELD_START = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def _fields(raw: bytes) -> list[tuple[str | None, int, int, int]]:
    """The header fields as (lower-case name or None, start, value start, end) byte offsets.

    The block ends at the first empty line, or at a line that is neither a field nor a
    continuation (what the email package then treats as body), so body text such as
    "X-Track: on" is never looked at.
    """
    fields: list[tuple[str | None, int, int, int]] = []
    pos, size = 0, len(raw)
    while pos < size:
        nl = raw.find(b"\n", pos)
        end = size if nl < 0 else nl + 1
        first = raw[pos]
        if first in b"\r\n" and raw[pos:end].strip(b"\r\n") == b"":
            break
        if first in b" \t":
            if fields:
                name, start, vstart, _ = fields[-1]
                fields[-1] = (name, start, vstart, end)
            else:
                fields.append((None, pos, pos, end))
        else:
            m = _FIELD_START.match(raw, pos, end)
            if m:
                fields.append((m.group(1).decode("ascii").lower(), pos, m.end(), end))
            elif pos == 0 and raw.startswith(b"From "):
                fields.append((None, pos, pos, end))  # mbox envelope line
            else:
                break
        pos = end
    return fields


def _unfold(value: bytes) -> str:
    return re.sub(r"\r?\n", "", value.decode("latin-1")).strip(" \t")


def header_values(raw: bytes, *names: str) -> dict[str, bytes]:
    """The first value of each named field (lower-case names), unfolded, as raw bytes; one
    scan of the header block for all of them. Absent fields are missing from the result."""
    wanted, found = {n.lower() for n in names}, {}
    for field_name, _, vstart, end in _fields(raw):
        if field_name in wanted and field_name not in found:
            found[field_name] = re.sub(rb"\r?\n", b"", raw[vstart:end]).strip(b" \t")
    return found


def header_all(raw: bytes, name: str) -> list[bytes]:
    """Every value of the named field (lower-case name), unfolded, as raw bytes."""
    return [re.sub(rb"\r?\n", b"", raw[vstart:end]).strip(b" \t")
            for field_name, _, vstart, end in _fields(raw) if field_name == name]


def read_controls(raw: bytes) -> MessageControl:
    """The tracking controls the message carries (the message itself is not changed)."""
    values: dict[str, list[str]] = {}
    subject_tags: set[str] = set()
    for name, _, vstart, end in _fields(raw):
        if name in CONTROL_HEADERS:
            values.setdefault(name, []).append(_unfold(raw[vstart:end]))
        elif name == "subject":
            value = raw[vstart:end].decode("latin-1")
            if _may_have_tag(value):
                text = "".join(c for c, _, _ in _display(_atoms(value)))
                subject_tags.update(t.lower() for t in _TAG.findall(text))
    header = parse_track_words(",".join(values[X_TRACK])) if X_TRACK in values else None
    if header is None:
        header = _aliases(values)
    tag = OFF if "no" in subject_tags else ON if "" in subject_tags else None
    return MessageControl(header=header, subject_tag=tag)


def _aliases(values: dict[str, list[str]]) -> Choice | None:
    def first(order: tuple[str, ...], known: str) -> Choice | None:
        for name in order:
            for value in values.get(name, ()):
                choice = _ALIAS_VALUES[name].get(value.lower())
                if choice is not None and getattr(choice, known) is not None:
                    return choice
        return None

    opens, links = first(_OPENS_ORDER, "opens"), first(_LINKS_ORDER, "clicks")
    if opens is None and links is None:
        return None
    return Choice(opens.opens if opens else None,
                  links.clicks if links else None,
                  links.text_links if links else False)


def strip_controls(raw: bytes) -> bytes:
    """``raw`` without control header fields and Subject tags; ``raw`` itself if none."""
    out: list[bytes] = []
    last = 0
    for name, start, vstart, end in _fields(raw):
        if name in CONTROL_HEADERS:
            out.append(raw[last:start])
            last = end
        elif name == "subject":
            new = _strip_subject_value(raw[vstart:end])
            if new is not None:
                out.append(raw[last:vstart])
                out.append(new)
                last = end
    if not out:
        return raw
    out.append(raw[last:])
    return b"".join(out)


# --- Subject tags and RFC 2047 -----------------------------------------------------------

_TAG = re.compile(r"\[(no)?track\]", re.IGNORECASE | re.ASCII)
_EW = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_BLANK = " \t"          # only ASCII blanks: latin-1 text of UTF-8 bytes contains \xa0 bytes
_FWS = " \t\r\n"
# RFC 2047 5(1): in unstructured text any printable ASCII but "=", "?", "_" may stay literal.
_Q_LITERAL = frozenset(range(0x21, 0x7F)) - {ord("="), ord("?"), ord("_")}


def _may_have_tag(value: str) -> bool:
    """False only where no tag can be: not in the value with its encoded words decoded and
    every blank removed (a superset of what a reader sees). The full decoding into atoms
    costs ~70 us; most subjects with encoded words have no tag."""
    if "=?" in value:
        value = _EW.sub(lambda m: "".join(w.chars) if (w := _decode_word(m)) else "", value)
    return "track]" in "".join(value.split()).lower()


class _Word:
    """One decodable encoded word: its decoded characters and which of them are kept."""

    def __init__(self, raw: str, charset: str, enc: str, text: str) -> None:
        self.raw, self.charset, self.enc = raw, charset, enc
        self.chars = list(text)
        self.keep = [True] * len(text)

    @property
    def survives(self) -> bool:
        return any(self.keep) or not self.chars

    @property
    def changed(self) -> bool:
        return not all(self.keep)

    def encoded(self) -> str:
        data = "".join(c for c, k in zip(self.chars, self.keep) if k).encode(self.charset.split("*")[0])
        if self.enc in "bB":
            payload = base64.b64encode(data).decode("ascii")
        else:
            payload = "".join(chr(b) if b in _Q_LITERAL else "_" if b == 0x20 else f"={b:02X}"
                              for b in data)
        return f"=?{self.charset}?{self.enc}?{payload}?="


# An atom is a _Word, or a [char, kept] pair for one character of raw text.


def _decode_word(m: re.Match[str]) -> _Word | None:
    charset, enc, payload = m.groups()
    try:
        if enc in "bB":
            data = binascii.a2b_base64(payload + "=" * (-len(payload) % 4))
        else:
            data = binascii.a2b_qp(payload.encode("latin-1"), header=True)
        codecs.lookup(charset.split("*")[0])
        text = data.decode(charset.split("*")[0])
    except (binascii.Error, LookupError, UnicodeError, ValueError):
        return None
    return _Word(m.group(0), charset, enc, text)


def _atoms(value: str) -> list:
    atoms: list = []
    pos = 0
    for m in _EW.finditer(value):
        # An undecodable word stays as it is: one opaque character no tag can match.
        word = _decode_word(m) or _Word(m.group(0), "", "", "\ufffd")
        atoms.extend([c, True] for c in value[pos:m.start()])
        atoms.append(word)
        pos = m.end()
    atoms.extend([c, True] for c in value[pos:])
    return atoms


def _gaps(atoms: list) -> list[tuple[int, int]]:
    """Runs of raw whitespace between two encoded words (RFC 2047: not displayed)."""
    gaps, i = [], 0
    while i < len(atoms):
        if isinstance(atoms[i], _Word):
            j = i + 1
            while j < len(atoms) and not isinstance(atoms[j], _Word) and atoms[j][0] in _FWS:
                j += 1
            if j > i + 1 and j < len(atoms) and isinstance(atoms[j], _Word):
                gaps.append((i + 1, j))
            i = j
        else:
            i += 1
    return gaps


def _display(atoms: list) -> list[tuple[str, int, int]]:
    """The visible characters of a header value, each with (atom index, offset in word)."""
    hidden = {k for a, b in _gaps(atoms) for k in range(a, b)}
    shown: list[tuple[str, int, int]] = []
    for i, atom in enumerate(atoms):
        if isinstance(atom, _Word):
            shown.extend((c, i, j) for j, c in enumerate(atom.chars) if atom.keep[j])
        elif i not in hidden and atom[0] not in "\r\n" and atom[1]:
            shown.append((atom[0], i, -1))
    return shown


def _set_keep(atoms: list, entries: list[tuple[str, int, int]], keep: bool) -> None:
    for _, i, j in entries:
        if j < 0:
            atoms[i][1] = keep
        else:
            atoms[i].keep[j] = keep


def _bad_joins(value: str) -> int:
    """How many encoded words touch something other than a blank or the value's edge."""
    bad = 0
    for m in _EW.finditer(value):
        if m.start() and value[m.start() - 1] not in _FWS:
            bad += 1
        if m.end() < len(value) and value[m.end()] not in _FWS:
            bad += 1
    return bad


def _folds(atoms: list, entry: tuple[str, int, int]) -> bool:
    """Whether a shown raw character is the blank that starts a folded line."""
    _, i, j = entry
    return j < 0 and i > 0 and not isinstance(atoms[i - 1], _Word) and atoms[i - 1][0] == "\n"


# Each tag removed one at a time re-reads the whole value: past this many, quadratic.
_TAGS_ONE_BY_ONE = 8


def _remove_tags(atoms: list) -> bool:
    """Delete every tag and one blank next to it; True if anything was deleted."""
    if len(_TAG.findall("".join(c for c, _, _ in _display(atoms)))) > _TAGS_ONE_BY_ONE:
        return _remove_many_tags(atoms)
    removed = False
    # Deleting a blank must not glue an encoded word to its neighbour (that would turn
    # it into literal text); inputs that already do so are left as they are.
    base = _bad_joins(_render(atoms))
    while True:
        shown = _display(atoms)
        text = "".join(c for c, _, _ in shown)
        m = _TAG.search(text)
        if m is None:
            return removed
        a, b = m.span()
        left, right = a, b
        while left and text[left - 1] in _BLANK:
            left -= 1
        while right < len(text) and text[right] in _BLANK:
            right += 1
        if right == len(text):
            candidates = [(left, right)]           # at the end: no trailing blank remains
        elif left == 0:
            candidates = [(a, right)]              # at the start: keep only the blank after "Subject:"
        elif left < a and right > b:
            # between words: one blank stays; keep a fold's blank (and so the fold)
            candidates = [(left, b), (a, right)] if _folds(atoms, shown[b]) else [(a, right), (left, b)]
        else:
            candidates = []
        for lo, hi in candidates + [(a, b)]:
            _set_keep(atoms, shown[lo:hi], False)
            if (lo, hi) == (a, b) or _bad_joins(_refold(_render(atoms))) <= base:
                break
            _set_keep(atoms, shown[lo:hi], True)
        removed = True


def _remove_many_tags(atoms: list) -> bool:
    """Delete every tag, blanks left as they are, in one pass: the shown characters go on a
    stack and a tag is popped off as soon as it is complete, so tags that removals join
    ("[tr[track]ack]") go too. For values with many tags (no mail writes them)."""
    stack: list[tuple[str, int, int]] = []
    removed = False
    for entry in _display(atoms):
        stack.append(entry)
        if entry[0] != "]":
            continue
        for size in (7, 9):  # [track], [notrack]
            tail = stack[-size:]
            if len(tail) == size and _TAG.fullmatch("".join(c for c, _, _ in tail)):
                _set_keep(atoms, tail, False)
                del stack[-size:]
                removed = True
                break
    return removed


def _render(atoms: list) -> str:
    # RFC 2047 blanks between encoded words are invisible; once words vanish, keep one
    # gap between consecutive survivors (the one right after the earlier survivor) and
    # drop the rest, or they would show as blanks.
    drop: set[int] = set()
    gaps = _gaps(atoms)
    for n, (a, b) in enumerate(gaps):
        keep = False
        if atoms[a - 1].survives:
            k = n
            while True:  # walk the chain of gap-separated words after this gap
                if atoms[gaps[k][1]].survives:
                    keep = True
                    break
                if k + 1 == len(gaps) or gaps[k + 1][0] != gaps[k][1] + 1:
                    break
                k += 1
        if not keep:
            drop.update(range(a, b))
    parts = []
    for i, atom in enumerate(atoms):
        if isinstance(atom, _Word):
            if atom.survives:
                parts.append(atom.encoded() if atom.changed else atom.raw)
        elif atom[1] and i not in drop:
            parts.append(atom[0])
    return "".join(parts)


def _refold(value: str) -> str:
    """Repair folding after deletions: a continuation line must start with a blank and
    must not be blank itself (a blank line would end the header block)."""
    pieces = re.split(r"(\r?\n)", value)
    lines, breaks = pieces[0::2], pieces[1::2]
    out = lines[0]
    for brk, line in zip(breaks, lines[1:]):
        if line.strip(_BLANK) == "":
            continue
        out += (brk + line) if line[0] in _BLANK else line
    return out


def _strip_subject_value(value: bytes) -> bytes | None:
    """The Subject value without tags, or None when it has none."""
    text = value.decode("latin-1")
    if not _may_have_tag(text):
        return None
    body = text.rstrip("\r\n")
    atoms = _atoms(body)
    if not _remove_tags(atoms):
        return None
    new = _refold(_render(atoms))
    return (new + text[len(body):]).encode("latin-1")
