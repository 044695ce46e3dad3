"""relay.control: reading and stripping the per-message tracking controls."""
from __future__ import annotations

import base64
import email
import email.policy
from email.header import decode_header, make_header

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.control import (
    CONTROL_HEADERS, OFF, ON, Choice, MessageControl, parse_track_words, read_controls,
    strip_controls,
)
from tests.corpus import corpus_files, require_corpus

BODY = b"Hello,\r\nX-Track: on\r\nSubject: [track] in the body\r\n"


def msg(*headers: str, body: bytes = BODY, eol: str = "\r\n") -> bytes:
    head = "".join(h.replace("\n", eol) + eol for h in headers)
    return head.encode("latin-1") + eol.encode() + body.replace(b"\r\n", eol.encode())


def subject_of(raw: bytes) -> str:
    """The Subject a recipient's client shows (decoded, unfolded)."""
    value = email.message_from_bytes(raw, policy=email.policy.compat32)["Subject"]
    return str(make_header(decode_header(value)))


def header_block(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    return raw[:end] if end >= 0 else raw[:raw.find(b"\n\n")]


# --- X-Track --------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("on", ON), ("ON", ON), ("all", ON), ("All", ON), ("yes", ON), ("YES", ON),
    ("opens", Choice(True, False)), ("Opens", Choice(True, False)),
    ("clicks", Choice(False, True)), ("CLICKS", Choice(False, True)),
    ("opens, clicks", ON), ("clicks,opens", ON), ("opens clicks", ON),
    ("off", OFF), ("Off", OFF), ("none", OFF), ("NONE", OFF), ("no", OFF),
    ("opens, bogus", Choice(True, False)),
    ("on, off", ON),             # a positive word wins over off in one header
    ("bogus", None), ("", None), ("  ,  ", None), ("opensclicks", None),
])
def test_x_track_words(value: str, expected: Choice | None) -> None:
    assert parse_track_words(value) == expected
    assert read_controls(msg("Subject: hi", f"X-Track: {value}")).header == expected


@pytest.mark.parametrize("name", ["X-Track", "x-track", "X-TRACK", "x-TrAcK"])
def test_x_track_name_case_insensitive(name: str) -> None:
    assert read_controls(msg(f"{name}: opens")).header == Choice(True, False)


def test_x_track_folded_value() -> None:
    assert read_controls(msg("X-Track: opens,\n clicks")).header == ON


def test_x_track_several_fields_read_as_one_list() -> None:
    assert read_controls(msg("X-Track: opens", "Subject: x", "X-Track: clicks")).header == ON


def test_x_track_blank_before_colon() -> None:
    assert read_controls(msg("X-Track : off")).header == OFF


def test_similar_header_names_are_not_controls() -> None:
    raw = msg("X-Tracking: on", "X-Track-Id: 7", "X-Mailgun-Tag: on", "X-PM-Tag: yes",
              "X-Mailgun-Track-Foo: yes")
    assert read_controls(raw) == MessageControl(None, None)
    assert strip_controls(raw) is raw


def test_no_controls_gives_empty_control() -> None:
    control = read_controls(msg("From: a@example.com", "Subject: plain"))
    assert control == MessageControl(header=None, subject_tag=None)
    assert not control.explicit


def test_body_text_is_never_read() -> None:
    raw = msg("Subject: hi", body=b"X-Track: on\r\nX-PM-TrackOpens: true\r\n[track]\r\n")
    assert read_controls(raw) == MessageControl(None, None)


# --- aliases ----------------------------------------------------------------------------

@pytest.mark.parametrize("header, expected", [
    ("X-Mailgun-Track: yes", Choice(True, True, True)),
    ("X-Mailgun-Track: true", Choice(True, True, True)),
    ("X-Mailgun-Track: YES", Choice(True, True, True)),
    ("X-Mailgun-Track: htmlonly", Choice(True, True, False)),
    ("X-Mailgun-Track: HtmlOnly", Choice(True, True, False)),
    ("X-Mailgun-Track: no", OFF),
    ("X-Mailgun-Track: false", OFF),
    ("X-Mailgun-Track: maybe", None),
    ("X-Mailgun-Track-Opens: yes", Choice(True, None)),
    ("X-Mailgun-Track-Opens: true", Choice(True, None)),
    ("X-Mailgun-Track-Opens: no", Choice(False, None)),
    ("X-Mailgun-Track-Opens: False", Choice(False, None)),
    ("X-Mailgun-Track-Opens: sometimes", None),
    ("X-Mailgun-Track-Clicks: yes", Choice(None, True, True)),
    ("X-Mailgun-Track-Clicks: htmlonly", Choice(None, True, False)),
    ("X-Mailgun-Track-Clicks: no", Choice(None, False, False)),
    ("X-Mailgun-Track-Clicks: textonly", None),
    ("X-PM-TrackOpens: true", Choice(True, None)),
    ("X-PM-TrackOpens: TRUE", Choice(True, None)),
    ("X-PM-TrackOpens: false", Choice(False, None)),
    ("X-PM-TrackOpens: 1", None),
    ("X-PM-TrackLinks: None", Choice(None, False, False)),
    ("X-PM-TrackLinks: HtmlAndText", Choice(None, True, True)),
    ("X-PM-TrackLinks: HtmlOnly", Choice(None, True, False)),
    ("X-PM-TrackLinks: TextOnly", Choice(None, False)),  # text links go only with HTML ones
    ("X-PM-TrackLinks: htmlandtext", Choice(None, True, True)),
    ("X-PM-TrackLinks: Everything", None),
])
def test_alias_values(header: str, expected: Choice | None) -> None:
    raw = msg("Subject: hi", header)
    assert read_controls(raw).header == expected
    # stripped whatever the value, known or not
    assert strip_controls(raw) == msg("Subject: hi")


@pytest.mark.parametrize("headers, expected", [
    (("X-Mailgun-Track-Opens: yes", "X-Mailgun-Track-Clicks: no"), Choice(True, False)),
    (("X-Mailgun-Track-Opens: no", "X-Mailgun-Track-Clicks: htmlonly"), Choice(False, True)),
    (("X-PM-TrackOpens: true", "X-PM-TrackLinks: HtmlAndText"), Choice(True, True, True)),
    (("X-PM-TrackOpens: false", "X-PM-TrackLinks: TextOnly"), Choice(False, False)),
    # the specific alias wins over Mailgun's catch-all for its own dimension
    (("X-Mailgun-Track: yes", "X-Mailgun-Track-Opens: no"), Choice(False, True, True)),
    (("X-Mailgun-Track-Clicks: no", "X-Mailgun-Track: yes"), Choice(True, False, False)),
    # an unknown value of the specific alias falls back to the catch-all
    (("X-Mailgun-Track: no", "X-Mailgun-Track-Opens: perhaps"), OFF),
    # the first known occurrence counts
    (("X-PM-TrackOpens: bogus", "X-PM-TrackOpens: false", "X-PM-TrackOpens: true"),
     Choice(False, None)),
])
def test_aliases_combine(headers: tuple[str, ...], expected: Choice) -> None:
    assert read_controls(msg(*headers)).header == expected


def test_x_track_wins_over_aliases() -> None:
    raw = msg("X-Mailgun-Track: no", "X-Track: opens", "X-PM-TrackLinks: HtmlAndText")
    assert read_controls(raw).header == Choice(True, False)


def test_unparseable_x_track_falls_back_to_aliases() -> None:
    raw = msg("X-Track: whatever", "X-PM-TrackOpens: false")
    assert read_controls(raw).header == Choice(False, None)


def test_choice_fill_takes_open_dimensions_from_lower_layer() -> None:
    assert Choice(True, None).fill(Choice(False, True, True)) == Choice(True, True, True)
    assert Choice(None, False, True).fill(ON) == Choice(True, False, True)
    assert Choice(None, None).fill(OFF) == OFF
    assert ON.fill(OFF) == ON
    assert Choice(True, None).fill(None) == Choice(True, None)


# --- subject tags: reading ----------------------------------------------------------------

@pytest.mark.parametrize("subject, expected", [
    ("[track] Quote", ON), ("Quote [track]", ON), ("Your [TRACK] quote", ON),
    ("[Track]", ON), ("Re:[track]quote", ON),
    ("[notrack] Quote", OFF), ("Quote [NoTrack]", OFF),
    ("[track] and [notrack]", OFF),          # contradiction: the safe reading
    ("[ track ] [tracking] track [no track]", None),
    ("=?UTF-8?B?W3RyYWNrXSBQcmVpc2FuZ2Vib3Qg4oKs?=", ON),
    ("=?utf-8?b?UHJlaXNhbmdlYm90IFtOT1RSQUNLXQ==?=", OFF),
    ("=?ISO-8859-2?Q?=AF=F3=B3w_[track]?=", ON),
    ("=?ISO-8859-2?Q?=AF=F3=B3w_=5Bnotrack=5D?=", OFF),
    ("=?UTF-8?Q?Hi_[tr?=\n =?UTF-8?Q?ack]?=", ON),     # a tag split across folded words
    ("Offer\n [track]", ON),
    ("=?UTF-8*en?Q?[track]_hi?=", ON),                  # RFC 2231 language suffix
])
def test_subject_tag_read(subject: str, expected: Choice | None) -> None:
    assert read_controls(msg(f"Subject: {subject}")).subject_tag == expected


def test_subject_tag_only_from_subject_field() -> None:
    raw = msg("Thread-Topic: [track]", "Subject: plain", "Comments: [notrack]")
    assert read_controls(raw).subject_tag is None
    assert strip_controls(raw) is raw


def test_header_and_subject_tag_both_read() -> None:
    raw = msg("Subject: [notrack] hi", "X-Track: on")
    assert read_controls(raw) == MessageControl(header=ON, subject_tag=OFF)


# --- stripping: control headers -------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CONTROL_HEADERS))
def test_strip_each_control_header(name: str) -> None:
    original = msg("From: a@example.com", "Subject: hi", "To: b@example.org")
    raw = msg(f"{name.upper()}: yes", "From: a@example.com", f"{name}: no", "Subject: hi",
              f"{name.title()}:\n  folded\n\tvalue", "To: b@example.org")
    assert strip_controls(raw) == original


@pytest.mark.parametrize("eol", ["\r\n", "\n"])
def test_strip_keeps_everything_else_byte_identical(eol: str) -> None:
    others = ("Received: from x\n\tby y; Mon, 1 Jan 2024 00:00:00 +0000",
              "From: =?UTF-8?Q?J=C3=BCrgen?= <j@example.com>",
              "Subject: plain", "X-Weird:   spaced   ", "Content-Type: text/plain;\n charset=utf-8")
    original = msg(*others, eol=eol)
    raw = msg(others[0], "X-Track: on", *others[1:3], "X-PM-TrackLinks: HtmlOnly\n  ",
              *others[3:], "X-Mailgun-Track: yes", eol=eol)
    stripped = strip_controls(raw)
    assert stripped == original
    assert stripped.endswith(BODY.replace(b"\r\n", eol.encode()))


def test_strip_keeps_8bit_header_bytes() -> None:
    raw = b"From: \xe9\xff <a@b>\r\nX-Track: on\r\nSubject: Gr\xc3\xbc\xc3\xa0 [track] x\r\n\r\nbody \xff"
    assert strip_controls(raw) == b"From: \xe9\xff <a@b>\r\nSubject: Gr\xc3\xbc\xc3\xa0 x\r\n\r\nbody \xff"


def test_strip_returns_same_object_when_nothing_to_strip() -> None:
    raw = msg("From: a@example.com", "Subject: =?UTF-8?B?SGVsbG8=?= track]")
    assert strip_controls(raw) is raw


def test_body_is_never_touched() -> None:
    body = b"X-Track: on\r\nX-PM-TrackOpens: true\r\nSubject: [track]\r\n\r\n[notrack]\r\n"
    raw = msg("Subject: hi", body=body)
    assert strip_controls(raw) is raw
    raw = msg("X-Track: off", "Subject: [track] hi", body=body)
    assert strip_controls(raw) == msg("Subject: hi", body=body)


def test_strip_message_without_body_or_final_newline() -> None:
    assert strip_controls(b"Subject: hi\r\nX-Track: on") == b"Subject: hi\r\n"
    assert strip_controls(b"X-Track: on\r\nSubject: hi") == b"Subject: hi"
    assert strip_controls(b"Subject: hi [track]") == b"Subject: hi"
    assert strip_controls(b"") == b""


def test_strip_stops_at_first_non_header_line() -> None:
    # no blank line: the email package reads "not a header" onwards as body, so do we
    raw = b"Subject: hi\r\nnot a header\r\nX-Track: on\r\n"
    assert strip_controls(raw) is raw
    assert read_controls(raw).header is None


def test_mbox_from_line_is_kept() -> None:
    raw = b"From a@b Mon Jan  1 00:00:00 2024\nX-Track: on\nSubject: x\n\nbody\n"
    assert strip_controls(raw) == b"From a@b Mon Jan  1 00:00:00 2024\nSubject: x\n\nbody\n"
    assert read_controls(raw).header == ON


# --- stripping: subject tags ---------------------------------------------------------------

@pytest.mark.parametrize("before, after", [
    # plain text: start, middle, end, alone, several, no blanks around
    ("[track] Quote", "Quote"),
    ("Quote [track]", "Quote"),
    ("Your [track] quote", "Your quote"),
    ("Your\t[track] quote", "Your\tquote"),
    ("[track]", ""),
    ("[notrack] Quote [TRACK]", "Quote"),
    ("[track] [notrack] Quote", "Quote"),
    ("Re: [track][track] x", "Re: x"),
    ("Re:[track]x", "Re:x"),
    ("Re: [track]x", "Re: x"),
    # folded plain subjects: the fold stays valid
    ("Quote\n [track]", "Quote"),
    ("[track]\n Quote", "Quote"),
    ("Long subject\n [track] continues", "Long subject\n continues"),
    ("Long subject [track]\n continues", "Long subject\n continues"),
    ("A\n [track]\n B", "A\n B"),
    # encoded words: re-encoded in the same charset and encoding, or gone when empty
    ("=?UTF-8?B?W3RyYWNrXSBIZWxsbw==?=", "=?UTF-8?B?SGVsbG8=?="),
    ("=?utf-8?b?SGVsbG8gW3RyYWNrXQ==?=", "=?utf-8?b?SGVsbG8=?="),
    ("=?UTF-8?Q?Hello_[track]_world?=", "=?UTF-8?Q?Hello_world?="),
    ("=?ISO-8859-2?Q?=AF=F3=B3w_[notrack]_ok?=", "=?ISO-8859-2?Q?=AF=F3=B3w_ok?="),
    ("=?iso-8859-2?q?[track]_=AF=F3=B3w?=", "=?iso-8859-2?q?=AF=F3=B3w?="),
    ("=?UTF-8?Q?[track]?=", ""),
    ("Hello =?UTF-8?Q?[track]?=", "Hello"),
    ("=?UTF-8?Q?[track]?= Hello", "Hello"),
    ("=?UTF-8?Q?[track]?= =?UTF-8?Q?Hello?=", "=?UTF-8?Q?Hello?="),
    ("=?UTF-8?Q?A?= =?UTF-8?Q?[track]?= =?UTF-8?Q?B?=", "=?UTF-8?Q?A?= =?UTF-8?Q?B?="),
    ("=?UTF-8?Q?A?=\n =?UTF-8?Q?[track]?=\n =?UTF-8?Q?B?=", "=?UTF-8?Q?A?=\n =?UTF-8?Q?B?="),
    ("=?UTF-8?Q?A?= =?UTF-8?Q?[track]?=\n =?UTF-8?Q?[notrack]?=", "=?UTF-8?Q?A?="),
    ("=?UTF-8?Q?Hello_[track]?= world", "=?UTF-8?Q?Hello?= world"),
    ("Hello =?UTF-8?Q?[track]_world?=", "Hello =?UTF-8?Q?world?="),
    ("=?UTF-8?Q?Caf=C3=A9?= [track] =?UTF-8?Q?cr=C3=A8me?=", "=?UTF-8?Q?Caf=C3=A9?= =?UTF-8?Q?cr=C3=A8me?="),
    ("=?UTF-8?Q?Hi_[tr?= =?UTF-8?Q?ack]_there?=", "=?UTF-8?Q?Hi_?= =?UTF-8?Q?there?="),
    # words without a tag keep their exact spelling
    ("=?UTF-8?B?w6k=?= [track] =?UTF-8?Q?=C3=A9?=", "=?UTF-8?B?w6k=?= =?UTF-8?Q?=C3=A9?="),
])
@pytest.mark.parametrize("eol", ["\r\n", "\n"])
def test_strip_subject_tag(before: str, after: str, eol: str) -> None:
    raw = msg("From: a@example.com", f"Subject: {before}", "To: b@example.org", eol=eol)
    expected_subject = f"Subject: {after}" if after else "Subject:"
    expected = msg("From: a@example.com", expected_subject, "To: b@example.org", eol=eol)
    assert strip_controls(raw) == expected
    shown = subject_of(expected)
    assert "track]" not in shown.lower()
    assert shown == shown.strip() and "  " not in shown


@pytest.mark.parametrize("subject, shown", [
    ("=?UTF-8?B?W3RyYWNrXSBQcmVpc2FuZ2Vib3Qg4oKs?=", "Preisangebot \u20ac"),
    ("=?ISO-8859-2?Q?Oferta_[track]_=BFó=B3w?=".replace("ó", "=F3"), "Oferta \u017c\u00f3\u0142w"),
    ("=?UTF-8?B?8J+YgCBbbm90cmFja10g8J+YgA==?=", "\U0001F600 \U0001F600"),
    ("=?UTF-8?Q?=E2=82=AC?=\n =?UTF-8?Q?_[track]?=", "\u20ac"),
])
def test_strip_subject_decodes_as_expected(subject: str, shown: str) -> None:
    stripped = strip_controls(msg(f"Subject: {subject}"))
    assert subject_of(stripped) == shown


def test_strip_every_subject_field() -> None:
    raw = msg("Subject: [track] one", "Subject: two [notrack]")
    assert strip_controls(raw) == msg("Subject: one", "Subject: two")


def test_undecodable_encoded_word_is_left_alone() -> None:
    raw = msg("Subject: =?x-unknown?Q?[track]?= =?UTF-8?B?!!!?=")
    assert strip_controls(raw) is raw


def test_stripped_subject_line_is_never_blank_or_broken() -> None:
    raw = msg("Subject: [track]\n [notrack]\n\t[track]", "To: b@example.org")
    assert strip_controls(raw) == msg("Subject:", "To: b@example.org")


# --- corpus -----------------------------------------------------------------------------------

def _eol_of(raw: bytes) -> bytes:
    return b"\r\n" if b"\r\n" in raw[:raw.find(b"\n") + 1] else b"\n"


@pytest.mark.parametrize("path", corpus_files("mime", "*.eml"))
def test_corpus_without_controls_is_untouched(path) -> None:
    require_corpus()
    raw = path.read_bytes()
    assert read_controls(raw) == MessageControl(None, None)
    assert strip_controls(raw) is raw


@pytest.mark.parametrize("path", corpus_files("mime", "*.eml"))
def test_corpus_with_controls_added_strips_back(path) -> None:
    require_corpus()
    raw = path.read_bytes()
    eol = _eol_of(raw)
    added = b"X-Track: opens" + eol + b"X-PM-TrackLinks: HtmlOnly" + eol + b"\t" + eol
    at = raw.lower().find(eol + b"subject:")
    if at < 0:  # no Subject: the control headers go first, and there is no tag to add
        marked = added + raw
        assert read_controls(marked).header == Choice(True, False)
        assert strip_controls(marked) == raw
        return
    at += len(eol)
    marked = raw[:at] + added + raw[at:]
    # and a tag at the end of the (last line of the) Subject value
    end = raw.find(eol, at)
    while raw[end + len(eol):end + len(eol) + 1] in (b" ", b"\t"):
        end = raw.find(eol, end + len(eol))
    if raw[end - 1:end] not in (b" ", b"\t", b":"):
        marked = raw[:at] + added + raw[at:end] + b" [track]" + raw[end:]
        assert read_controls(marked).subject_tag == ON
    assert read_controls(marked).header == Choice(True, False)   # X-Track wins
    assert strip_controls(marked) == raw


# --- properties -------------------------------------------------------------------------------

_NAME = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.", min_size=1,
                max_size=20).filter(lambda n: n.lower() not in CONTROL_HEADERS)
# printable ASCII without "[" and "?" (so no tag, plain or encoded) plus raw 8-bit bytes
_VALUE = st.text("".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in "[?")
                 + "\t\xa0\xe9\xff\x80", max_size=40)
_FIELD = st.tuples(_NAME, st.lists(_VALUE, min_size=1, max_size=3), st.sampled_from([" ", "\t"]))
_CONTROL = st.tuples(
    st.sampled_from(sorted(CONTROL_HEADERS)).flatmap(
        lambda n: st.sampled_from([n, n.upper(), n.title()])),
    st.lists(st.sampled_from(["on", "off", "yes", "no", "htmlonly", "TextOnly", "true", "", "x y"]),
             min_size=1, max_size=2),
    st.sampled_from([" ", "\t"]),
)
_BODY = st.lists(st.sampled_from([b"X-Track: on", b"Subject: [track]", b"", b" [track]", b"text \xff"]),
                 max_size=5)


def _field(name: str, segments: list[str], fold: str, eol: str) -> str:
    return f"{name}:{segments[0]}" + "".join(f"{eol}{fold}{s}" for s in segments[1:]) + eol


def _message(fields: list, eol: str, body: list[bytes]) -> bytes:
    head = "".join(_field(*f, eol) for f in fields)
    return head.encode("latin-1") + eol.encode() + eol.encode().join(body)


@settings(max_examples=300, deadline=None)
@given(st.lists(_FIELD, max_size=12), st.sampled_from(["\r\n", "\n"]), _BODY)
def test_property_no_controls_identical(fields: list, eol: str, body: list[bytes]) -> None:
    raw = _message(fields, eol, body)
    assert strip_controls(raw) is raw
    assert read_controls(raw) == MessageControl(None, None)


@settings(max_examples=300, deadline=None)
@given(st.lists(_FIELD, max_size=12), st.lists(st.tuples(st.integers(0, 12), _CONTROL), min_size=1,
                                               max_size=6),
       st.sampled_from(["\r\n", "\n"]), _BODY)
def test_property_inserted_controls_strip_to_original(fields: list, controls: list, eol: str,
                                                      body: list[bytes]) -> None:
    original = _message(fields, eol, body)
    marked = list(fields)
    for position, control in controls:
        marked.insert(min(position, len(marked)), control)
    assert strip_controls(_message(marked, eol, body)) == original


_WORD = st.text("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789.,!-:", min_size=1, max_size=8)
_UWORD = st.text("abcxyzäöüßéèçłóżœ€😀", min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(st.lists(_WORD, max_size=6), st.data(), st.sampled_from(["[track]", "[NOTRACK]"]))
def test_property_plain_tag_anywhere(words: list[str], data: st.DataObject, tag: str) -> None:
    at = data.draw(st.integers(0, len(words)))
    subject = " ".join(words[:at] + [tag] + words[at:])
    stripped = strip_controls(msg(f"Subject: {subject}"))
    assert stripped == msg(f"Subject: {' '.join(words)}" if words else "Subject:")
    assert read_controls(msg(f"Subject: {subject}")).subject_tag == (OFF if "NO" in tag else ON)


@settings(max_examples=200, deadline=None)
@given(st.lists(_UWORD, max_size=6), st.data(), st.sampled_from(["B", "Q", "b", "q"]))
def test_property_encoded_tag_anywhere(words: list[str], data: st.DataObject, enc: str) -> None:
    at = data.draw(st.integers(0, len(words)))
    subject = " ".join(words[:at] + ["[track]"] + words[at:]).encode("utf-8")
    if enc in "bB":
        payload = base64.b64encode(subject).decode()
    else:
        payload = "".join(f"={b:02X}" if b > 0x7E or b in b"=?_" else "_" if b == 0x20 else chr(b)
                          for b in subject)
    raw = msg(f"Subject: =?utf-8?{enc}?{payload}?=")
    assert read_controls(raw).subject_tag == ON
    stripped = strip_controls(raw)
    assert subject_of(stripped) == " ".join(words)
    if words:
        assert f"=?utf-8?{enc}?".encode() in stripped
