"""What a webhook sends: one event (or a digest of several) -> each tool's body and headers. No I/O.

Every value a recipient controls (subject, address, URL, user agent) goes through the tool's own
escape before it reaches a message, so it can neither ping anyone nor inject markup (invariant 7),
and is cut to fit the tool's length limits, never mid-escape.
"""
from __future__ import annotations

import hashlib
import hmac
import html
import json
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

KINDS = ("json", "slack", "mattermost", "discord", "teams", "googlechat")
TYPES = ("message.opened", "link.clicked", "message.unopened")
SIGNATURE_TOLERANCE = 300  # seconds: an older signature is a replay

Headers = dict[str, str]
Payload = tuple[bytes, Headers]


@dataclass(frozen=True)
class NoticeEvent:
    id: str                 # the event id: the same on every retry
    type: str               # one of TYPES
    occurred_at: str        # RFC 3339 UTC
    message_id: str         # the panel's id of the message
    message_header_id: str  # its Message-ID header
    subject: str
    recipient: str
    url: str = ""           # the clicked link, for link.clicked
    hit_class: str = ""     # human, prefetch, proxy, scanner, self
    nth: int = 1            # this is the nth open (or click) of this message by this recipient
    user_agent: str = ""
    panel_url: str = ""     # admin.public_url + /messages/<id>


# --- signing (the README's receiver example uses the same two functions) ---

def sign(secret: str, t: int, body: bytes) -> str:
    """The X-Trackrelay-Signature value for a body sent at unix time t."""
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, header: str, body: bytes, now: int, tolerance: int = SIGNATURE_TOLERANCE) -> bool:
    """True if the header signs this body with this secret, no older than `tolerance` seconds."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name, []).append(value)
    try:
        t = int(fields.get("t", [""])[0])
    except ValueError:
        return False
    if abs(now - t) > tolerance:
        return False
    expected = sign(secret, t, body).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, given) for given in fields.get("v1", []))


# --- escaping: one function per tool, each cut to a limit without splitting an escape ---

ZWSP = "\u200b"  # after "@", it breaks @everyone / @channel / @here for every tool that reads them


# control characters become spaces (a newline could start a heading, list or quote); bidi
# overrides would let a subject display reversed
_CONTROLS = {c: " " for c in [*range(0x20), 0x7f, *range(0x80, 0xa0), 0x2028, 0x2029]} | {
    c: None for c in [*range(0x202a, 0x202f), *range(0x2066, 0x206a)]}


def _clean(text: str) -> str:
    # stripped too: Slack reads no code span that starts or ends with a space
    return text.translate(_CONTROLS).strip()


def _escaper(table: Mapping[str, str]) -> Callable[[str, int], str]:
    def escape(text: str, limit: int) -> str:
        out: list[str] = []
        used = 0
        for ch in _clean(text):
            piece = table.get(ch, ch)
            if used + len(piece) > limit - 1:  # room for the ellipsis
                out.append("…")
                break
            out.append(piece)
            used += len(piece)
        return "".join(out)
    return escape


_MENTION = {"@": "@" + ZWSP}
_BACKSLASHED = "\\*_~`|>#[]()-+!.:<"

# Slack mrkdwn has no backslash escape: &<> become entities (that kills <!channel>, <@U123> and
# <url|label>), and the value sits in a code span where *bold* and friends are not read.
escape_slack = _escaper({"&": "&amp;", "<": "&lt;", ">": "&gt;", "`": "ˋ", **_MENTION})
# Mattermost turns a literal <!channel> into @channel, so < and > must not survive as characters.
escape_mattermost = _escaper({"&": "&amp;", "<": "&lt;", ">": "&gt;",
                              **{c: "\\" + c for c in _BACKSLASHED if c not in "<>"}, **_MENTION})
# Discord reads backslash escapes, including \<@123>; allowed_mentions stops pings besides.
escape_discord = _escaper({**{c: "\\" + c for c in _BACKSLASHED}, **_MENTION})
# Adaptive Cards render a markdown subset (no HTML, mentions need entities we never send).
escape_teams = _escaper({**{c: "\\" + c for c in _BACKSLASHED}, **_MENTION})
# Google Chat card text is an HTML subset: entities make it inert, <users/all> included.
escape_googlechat = _escaper({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;", **_MENTION})


# --- the words of a notice, shared by every kind ---

def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def when(occurred_at: str) -> str:
    """2026-12-04T11:05:09Z -> 2026-12-04 11:05 UTC (the stored form is RFC 3339 UTC)."""
    date, _, clock = occurred_at.partition("T")
    return f"{date} {clock[:5]} UTC" if clock else occurred_at


def headline(event: NoticeEvent) -> str:
    """The fixed words, no recipient text: safe anywhere, e.g. a title or a notification."""
    if event.type == "message.opened":
        return "Opened" if event.nth <= 1 else f"Opened ({ordinal(event.nth)} open)"
    if event.type == "link.clicked":
        return "Link clicked" if event.nth <= 1 else f"Link clicked ({ordinal(event.nth)} click)"
    return "Not opened yet"


# Budgets per value, in characters before escaping: they keep each field far below every limit.
SUBJECT, ADDRESS, URL, AGENT = 200, 254, 500, 200


@dataclass(frozen=True)
class _Facts:
    """One event's recipient-controlled values, escaped for one tool."""
    subject: str
    recipient: str
    url: str
    agent: str


def _facts(event: NoticeEvent, escape: Callable[[str, int], str]) -> _Facts:
    return _Facts(escape(event.subject or "(no subject)", SUBJECT), escape(event.recipient, ADDRESS),
                  escape(event.url, URL), escape(event.user_agent, AGENT))


def _encode(document: object) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


JSON_HEADERS = {"Content-Type": "application/json"}


# --- json: the signed machine format ---

def json_document(event: NoticeEvent) -> dict[str, object]:
    return {"id": event.id, "type": event.type, "occurred_at": event.occurred_at,
            "message": {"id": event.message_id, "message_id": event.message_header_id,
                        "subject": event.subject},
            "recipient": event.recipient, "url": event.url or None, "class": event.hit_class}


def _signed(body: bytes, event_id: str, secret: str, t: int) -> Payload:
    if not secret:  # every json webhook has one: an unsigned delivery is a bug upstream of here
        raise ValueError("a json webhook is signed: no secret given")
    return body, {**JSON_HEADERS, "X-Trackrelay-Event-Id": event_id,
                  "X-Trackrelay-Signature": sign(secret, t, body)}


# --- Slack: Block Kit with a text fallback (notifications and old clients show the fallback) ---

SLACK_TEXT = 3000  # a section's text


def _code(value: str) -> str:
    return f"`{value}`" if value else ""


def _slack_lines(event: NoticeEvent) -> list[str]:
    f = _facts(event, escape_slack)
    lines = [f"*{headline(event)}* {_code(f.recipient)}", f"Subject: {_code(f.subject)}"]
    if f.url:
        lines.append(f"Link: {_code(f.url)}")
    return lines


def _slack_button(url: str) -> dict[str, object]:
    return {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open in panel"},
                                             "url": url}]}


def slack(event: NoticeEvent) -> Payload:
    lines = _slack_lines(event)
    agent = escape_slack(event.user_agent, AGENT)
    context = f"{when(event.occurred_at)} · {event.hit_class}" + (f" · {_code(agent)}" if agent else "")
    blocks: list[dict[str, object]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines), "verbatim": True}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": context, "verbatim": True}]}]
    if event.panel_url:
        blocks.append(_slack_button(event.panel_url))
    return _encode({"text": " ".join(lines[:2]), "blocks": blocks}), dict(JSON_HEADERS)


def _digest_line(event: NoticeEvent, escape: Callable[[str, int], str], code: Callable[[str], str]) -> str:
    f = _facts(event, escape)
    line = f"{when(event.occurred_at)} {headline(event)}: {code(f.recipient)} {code(f.subject)}"
    return line + (f" {code(f.url)}" if f.url else "")


def _fit_lines(lines: Sequence[str], limit: int) -> str:
    """As many whole lines as fit in `limit` characters, then a count of the rest."""
    kept: list[str] = []
    used = 0
    for i, line in enumerate(lines):
        tail = f"\n…and {len(lines) - i} more"
        if used + len(line) + 1 + len(tail) > limit:
            kept.append(tail.strip())
            break
        kept.append(line)
        used += len(line) + 1
    return "\n".join(kept)


def _digest_title(events: Sequence[NoticeEvent]) -> str:
    return f"Tracking digest: {len(events)} event" + ("" if len(events) == 1 else "s")


def slack_digest(events: Sequence[NoticeEvent]) -> Payload:
    text = _fit_lines([_digest_line(e, escape_slack, _code) for e in events], SLACK_TEXT)
    blocks = [{"type": "header", "text": {"type": "plain_text", "text": _digest_title(events)}},
              {"type": "section", "text": {"type": "mrkdwn", "text": text, "verbatim": True}}]
    return _encode({"text": _digest_title(events), "blocks": blocks}), dict(JSON_HEADERS)


# --- Mattermost: markdown text (its own limit is 16383 characters) ---

MATTERMOST_TEXT = 16383


def _markdown_lines(event: NoticeEvent, escape: Callable[[str, int], str]) -> list[str]:
    f = _facts(event, escape)
    lines = [f"**{headline(event)}** {f.recipient}", f"Subject: {f.subject}"]
    if f.url:
        lines.append(f"Link: {f.url}")
    if f.agent:
        lines.append(f"Agent: {f.agent}")
    lines.append(f"{when(event.occurred_at)} · {event.hit_class}")
    return lines


def _panel_link(url: str) -> str:
    # the panel URL is ours (admin.public_url + an id we made), not a recipient's
    return f"[Open in panel]({url})" if url else ""


def mattermost(event: NoticeEvent) -> Payload:
    lines = _markdown_lines(event, escape_mattermost) + [_panel_link(event.panel_url)]
    return _encode({"text": "\n".join(l for l in lines if l)}), dict(JSON_HEADERS)


def mattermost_digest(events: Sequence[NoticeEvent]) -> Payload:
    body = _fit_lines([_digest_line(e, escape_mattermost, str) for e in events], MATTERMOST_TEXT - 100)
    return _encode({"text": f"**{_digest_title(events)}**\n{body}"}), dict(JSON_HEADERS)


# --- Discord: an embed; allowed_mentions empty so nothing in it can ping ---

DISCORD_TITLE, DISCORD_DESCRIPTION, DISCORD_FIELD_VALUE, DISCORD_FOOTER, DISCORD_TOTAL = 256, 4096, 1024, 2048, 6000
NO_MENTIONS = {"parse": []}


def discord(event: NoticeEvent) -> Payload:
    f = _facts(event, escape_discord)
    fields = [{"name": "Recipient", "value": f.recipient or "-", "inline": True},
              {"name": "Subject", "value": f.subject, "inline": False}]
    if f.url:
        fields.append({"name": "Link", "value": f.url, "inline": False})
    if f.agent:
        fields.append({"name": "Agent", "value": f.agent, "inline": False})
    embed: dict[str, object] = {"title": headline(event), "fields": fields,
                                "footer": {"text": event.hit_class or "-"}, "timestamp": event.occurred_at}
    if event.panel_url:
        embed["url"] = event.panel_url
    return _encode({"embeds": [embed], "allowed_mentions": NO_MENTIONS}), dict(JSON_HEADERS)


def discord_digest(events: Sequence[NoticeEvent]) -> Payload:
    title = _digest_title(events)
    description = _fit_lines([_digest_line(e, escape_discord, str) for e in events],
                             min(DISCORD_DESCRIPTION, DISCORD_TOTAL - len(title)))
    embed = {"title": title, "description": description}
    return _encode({"embeds": [embed], "allowed_mentions": NO_MENTIONS}), dict(JSON_HEADERS)


# --- Teams: a Workflows webhook message carrying one Adaptive Card (whole message under 28 KB) ---

TEAMS_BYTES = 28 * 1024
TEAMS_DIGEST_TEXT = 12_000  # characters; escapes and UTF-8 may double it, still under TEAMS_BYTES


def _teams_message(body: list[dict[str, object]], panel_url: str) -> bytes:
    card: dict[str, object] = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                               "type": "AdaptiveCard", "version": "1.4", "body": body}
    if panel_url:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open in panel", "url": panel_url}]
    return _encode({"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]})


def teams(event: NoticeEvent) -> Payload:
    f = _facts(event, escape_teams)
    facts = [{"title": "Recipient", "value": f.recipient}, {"title": "Subject", "value": f.subject}]
    if f.url:
        facts.append({"title": "Link", "value": f.url})
    if f.agent:
        facts.append({"title": "Agent", "value": f.agent})
    facts.append({"title": "When", "value": f"{when(event.occurred_at)} · {event.hit_class}"})
    body = [{"type": "TextBlock", "text": headline(event), "weight": "Bolder", "size": "Medium", "wrap": True},
            {"type": "FactSet", "facts": facts}]
    return _teams_message(body, event.panel_url), dict(JSON_HEADERS)


def teams_digest(events: Sequence[NoticeEvent]) -> Payload:
    text = _fit_lines([_digest_line(e, escape_teams, str) for e in events], TEAMS_DIGEST_TEXT)
    body = [{"type": "TextBlock", "text": _digest_title(events), "weight": "Bolder", "wrap": True},
            {"type": "TextBlock", "text": text.replace("\n", "\n\n"), "wrap": True}]
    return _teams_message(body, ""), dict(JSON_HEADERS)


# --- Google Chat: a cardsV2 card (its text is an HTML subset, so entities make it inert) ---

GOOGLECHAT_CARD_BYTES = 32 * 1024
GOOGLECHAT_DIGEST_TEXT = 12_000


def _googlechat_message(title: str, widgets: list[dict[str, object]], card_id: str) -> bytes:
    # `text` carries only our fixed words: Chat's text format has no escape for <users/all>
    return _encode({"text": title, "cardsV2": [{"cardId": card_id, "card": {
        "header": {"title": title}, "sections": [{"widgets": widgets}]}}]})


def googlechat(event: NoticeEvent) -> Payload:
    f = _facts(event, escape_googlechat)
    widgets: list[dict[str, object]] = [
        {"decoratedText": {"topLabel": "Recipient", "text": f.recipient}},
        {"decoratedText": {"topLabel": "Subject", "text": f.subject, "wrapText": True}}]
    if f.url:
        widgets.append({"decoratedText": {"topLabel": "Link", "text": f.url, "wrapText": True}})
    if f.agent:
        widgets.append({"decoratedText": {"topLabel": "Agent", "text": f.agent, "wrapText": True}})
    widgets.append({"decoratedText": {"topLabel": "When",
                                      "text": html.escape(f"{when(event.occurred_at)} · {event.hit_class}")}})
    if event.panel_url:
        widgets.append({"buttonList": {"buttons": [{"text": "Open in panel",
                                                    "onClick": {"openLink": {"url": event.panel_url}}}]}})
    return _googlechat_message(headline(event), widgets, event.id), dict(JSON_HEADERS)


def googlechat_digest(events: Sequence[NoticeEvent]) -> Payload:
    text = _fit_lines([_digest_line(e, escape_googlechat, str) for e in events], GOOGLECHAT_DIGEST_TEXT)
    widgets = [{"textParagraph": {"text": text.replace("\n", "<br>")}}]
    return _googlechat_message(_digest_title(events), widgets, "digest"), dict(JSON_HEADERS)


# --- the two entry points ---

_CHAT: dict[str, Callable[[NoticeEvent], Payload]] = {
    "slack": slack, "mattermost": mattermost, "discord": discord, "teams": teams, "googlechat": googlechat}
_CHAT_DIGEST: dict[str, Callable[[Sequence[NoticeEvent]], Payload]] = {
    "slack": slack_digest, "mattermost": mattermost_digest, "discord": discord_digest,
    "teams": teams_digest, "googlechat": googlechat_digest}


def render(kind: str, event: NoticeEvent, *, secret: str = "", t: int = 0) -> Payload:
    """One event for one webhook kind; `json` is signed with `secret` at unix time `t`."""
    if kind == "json":
        return _signed(_encode(json_document(event)), event.id, secret, t)
    return _CHAT[kind](event)


def render_digest(kind: str, digest_id: str, events: Sequence[NoticeEvent], *, secret: str = "",
                  t: int = 0) -> Payload:
    """One summary message for a period's events; `json` lists them all, chat kinds what fits."""
    if kind == "json":
        body = _encode({"id": digest_id, "type": "digest", "events": [json_document(e) for e in events]})
        return _signed(body, digest_id, secret, t)
    return _CHAT_DIGEST[kind](events)
