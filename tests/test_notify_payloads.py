"""Each webhook kind's body: its tool's required shape, recipient text inert, lengths capped, signatures."""
from __future__ import annotations

import ast
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from relay.notify_payloads import (DISCORD_DESCRIPTION, DISCORD_FIELD_VALUE, DISCORD_TITLE, DISCORD_TOTAL,
                                   GOOGLECHAT_CARD_BYTES, KINDS, MATTERMOST_TEXT, SLACK_TEXT,
                                   TEAMS_BYTES, NoticeEvent, ordinal, render, render_digest, sign, verify)

HOSTILE = ("<!channel> <!here> <!everyone> <@U123> <#C1> @everyone @here @channel @all ~town-square "
           "[x](http://evil) <https://evil|click> *bold* _it_ ~strike~ `code` **b** # head > quote "
           "<b>html</b> <at>Bob</at> <users/all> &amp; \\*\n- list\n1. one")
EVENT = NoticeEvent(id="ev-1", type="message.opened", occurred_at="2026-12-04T11:05:09Z", message_id="42",
                    message_header_id="<abc@example.com>", subject="Quarterly numbers", recipient="bob@example.com",
                    hit_class="human", nth=2, user_agent="Mozilla/5.0", panel_url="https://panel.example/messages/42")
CLICK = replace(EVENT, id="ev-2", type="link.clicked", nth=1, url="https://shop.example/a_b?x=1")
EVIL = replace(CLICK, subject="Re: " + HOSTILE, recipient=HOSTILE + "@example.com",
               url="https://evil.example/?q=" + HOSTILE, user_agent=HOSTILE)
HUGE = replace(EVIL, subject=HOSTILE * 500, recipient=HOSTILE * 500, url=HOSTILE * 500, user_agent=HOSTILE * 500)
CHAT = [k for k in KINDS if k != "json"]


def chat_texts(kind: str, document: dict) -> list[str]:
    """Every string the tool renders as text (not our URLs, ids and enum values)."""
    skip = {"url", "$schema", "type", "contentType", "cardId", "timestamp", "weight", "size", "version"}
    found: list[str] = []

    def walk(node: object, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k not in skip:
                    walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str):
            found.append(node)

    walk(document)
    return found


def unescaped(pattern: str, text: str) -> list[str]:
    """Occurrences of `pattern` not preceded by a backslash escape."""
    return [m.group() for m in re.finditer(pattern, text) if not _escaped(text, m.start())]


def _escaped(text: str, index: int) -> bool:
    slashes = 0
    while index - slashes - 1 >= 0 and text[index - slashes - 1] == "\\":
        slashes += 1
    return slashes % 2 == 1


MENTIONS = r"@(everyone|here|channel|all)\b"


@pytest.mark.parametrize("event", [EVENT, CLICK, replace(EVENT, type="message.unopened")])
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_json_with_its_tools_fields(kind: str, event: NoticeEvent) -> None:
    body, headers = render(kind, event, secret="s3cret", t=1_700_000_000)
    document = json.loads(body)
    assert headers["Content-Type"] == "application/json"
    if kind == "json":
        assert set(document) == {"id", "type", "occurred_at", "message", "recipient", "url", "class"}
        assert document["message"] == {"id": "42", "message_id": "<abc@example.com>", "subject": event.subject}
        assert headers["X-Trackrelay-Event-Id"] == event.id
    elif kind == "slack":
        assert document["text"] and document["blocks"][0]["type"] == "section"
        assert document["blocks"][-1]["elements"][0]["url"] == event.panel_url
    elif kind == "mattermost":
        assert event.panel_url in document["text"]
    elif kind == "discord":
        assert document["allowed_mentions"] == {"parse": []}
        assert document["embeds"][0]["url"] == event.panel_url
    elif kind == "teams":
        assert document["type"] == "message"
        attachment = document["attachments"][0]
        assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
        assert attachment["content"]["type"] == "AdaptiveCard"
        assert attachment["content"]["actions"][0]["url"] == event.panel_url
    elif kind == "googlechat":
        card = document["cardsV2"][0]["card"]
        assert card["header"]["title"] and card["sections"][0]["widgets"]
    if kind != "json":
        assert event.panel_url in body.decode()


def test_a_chat_notice_says_who_which_mail_which_link_and_which_open() -> None:
    text = "\n".join(chat_texts("slack", json.loads(render("slack", EVENT)[0])))
    assert "2nd open" in text and "Quarterly numbers" in text and "2026-12-04 11:05 UTC" in text
    assert "bob@\u200bexample.com" in text  # the address, its @ unable to ping
    click = "\n".join(chat_texts("discord", json.loads(render("discord", CLICK)[0])))
    assert "Link clicked" in click and "shop\\.example" in click


@pytest.mark.parametrize("kind", CHAT)
def test_recipient_text_pings_nobody(kind: str) -> None:
    for text in chat_texts(kind, json.loads(render(kind, EVIL)[0])):
        assert not re.search(MENTIONS, text), text
        assert not unescaped(r"<[!@#]|<users/|<https://evil\|", text), text


@pytest.mark.parametrize("kind", ["slack"])
def test_slack_recipient_text_sits_in_code_spans_it_cannot_close(kind: str) -> None:
    document = json.loads(render(kind, EVIL)[0])
    section = document["blocks"][0]["text"]["text"]
    assert "&lt;https://evil|click&gt;" in section and "<" not in section
    # outside our own *headline*, every * sits between backticks
    for line in section.splitlines()[1:]:
        label, _, value = line.partition(": ")
        assert value.startswith("`") and value.endswith("`") and value.count("`") == 2
        assert value[1] != " " and value[-2] != " "  # Slack reads no code span with a space at its edge


def test_slack_code_spans_hold_values_with_spaces_at_their_edges() -> None:
    padded = replace(EVIL, subject="  *bold*  ", recipient=" \t<!channel> ")
    section = json.loads(render("slack", padded)[0])["blocks"][0]["text"]["text"]
    assert "Subject: `*bold*`" in section and "`&lt;!channel&gt;`" in section


@pytest.mark.parametrize("kind", ["mattermost", "discord", "teams"])
def test_markdown_tools_see_every_markup_character_escaped(kind: str) -> None:
    for text in chat_texts(kind, json.loads(render(kind, EVIL)[0])):
        if "Open in panel" in text:  # our own link, the only markup we write
            text = text.replace("[Open in panel](https://panel.example/messages/42)", "")
        text = text.replace("**Link clicked**", "")
        assert not unescaped(r"[\[\]()*_~`#|]", text), text
        assert not unescaped(r"<", text), text


def test_mattermost_never_carries_a_slack_style_link_or_announcement() -> None:
    text = json.loads(render("mattermost", EVIL)[0])["text"]
    assert "<" not in text and ">" not in text  # Mattermost would turn <!channel> into @channel


def test_googlechat_card_text_is_html_escaped_and_its_text_fallback_is_ours() -> None:
    document = json.loads(render("googlechat", EVIL)[0])
    assert document["text"] == "Link clicked"
    widgets = document["cardsV2"][0]["card"]["sections"][0]["widgets"]
    texts = [w["decoratedText"]["text"] for w in widgets if "decoratedText" in w]
    assert any("&lt;b&gt;html&lt;/b&gt;" in t for t in texts)
    assert not any(re.search(r"<[a-z/!@]", t) for t in texts)


def test_teams_mentions_need_entities_and_none_are_sent() -> None:
    document = json.loads(render("teams", EVIL)[0])
    assert "msteams" not in document["attachments"][0]["content"]
    assert "<at>" not in json.dumps(document, ensure_ascii=False)


@pytest.mark.parametrize("kind", CHAT)
def test_huge_recipient_text_stays_within_the_tools_limits(kind: str) -> None:
    body, _ = render(kind, HUGE)
    document = json.loads(body)
    if kind == "slack":
        assert all(len(b["text"]["text"]) <= SLACK_TEXT for b in document["blocks"] if b["type"] == "section")
        assert len(document["text"]) <= SLACK_TEXT
    elif kind == "mattermost":
        assert len(document["text"]) <= MATTERMOST_TEXT
    elif kind == "discord":
        embed = document["embeds"][0]
        assert len(embed["title"]) <= DISCORD_TITLE
        assert all(len(f["value"]) <= DISCORD_FIELD_VALUE for f in embed["fields"])
        total = len(embed["title"]) + sum(len(f["name"]) + len(f["value"]) for f in embed["fields"])
        assert total + len(embed["footer"]["text"]) <= DISCORD_TOTAL
    elif kind == "teams":
        assert len(body) <= TEAMS_BYTES
    elif kind == "googlechat":
        assert len(body) <= GOOGLECHAT_CARD_BYTES
    assert "…" in body.decode()  # cut, and saying so


@pytest.mark.parametrize("kind", KINDS)
def test_a_digest_is_one_message_listing_several_events(kind: str) -> None:
    events = [replace(CLICK, id=f"ev-{i}", subject=f"Mail number {i}") for i in range(5)]
    body, headers = render_digest(kind, "dg-1", events, secret="s3cret", t=1_700_000_000)
    text = body.decode()
    assert all(f"Mail number {i}" in text for i in range(5))
    if kind == "json":
        assert [e["id"] for e in json.loads(body)["events"]] == [f"ev-{i}" for i in range(5)]
        assert headers["X-Trackrelay-Event-Id"] == "dg-1"
    else:
        assert "5 events" in text


@pytest.mark.parametrize("kind", CHAT)
def test_a_huge_digest_lists_what_fits_and_counts_the_rest(kind: str) -> None:
    events = [replace(HUGE, id=f"ev-{i}") for i in range(300)]
    body, _ = render_digest(kind, "dg-2", events)
    document = json.loads(body)
    assert re.search(r"…and \d+ more", body.decode())
    if kind == "slack":
        assert all(len(b["text"]["text"]) <= SLACK_TEXT for b in document["blocks"] if b["type"] == "section")
    elif kind == "discord":
        assert len(document["embeds"][0]["description"]) <= DISCORD_DESCRIPTION
        assert document["allowed_mentions"] == {"parse": []}
    elif kind == "mattermost":
        assert len(document["text"]) <= MATTERMOST_TEXT
    elif kind == "teams":
        assert len(body) <= TEAMS_BYTES
    elif kind == "googlechat":
        assert len(body) <= GOOGLECHAT_CARD_BYTES


def test_json_is_signed_over_the_raw_body() -> None:
    body, headers = render("json", EVIL, secret="s3cret", t=1_700_000_000)
    header = headers["X-Trackrelay-Signature"]
    assert header.startswith("t=1700000000,v1=") and header == sign("s3cret", 1_700_000_000, body)
    assert verify("s3cret", header, body, now=1_700_000_010)


def test_verify_rejects_tampering_another_secret_and_garbage() -> None:
    body, headers = render("json", EVENT, secret="s3cret", t=1_700_000_000)
    header = headers["X-Trackrelay-Signature"]
    assert not verify("s3cret", header, body.replace(b"human", b"scanner"), now=1_700_000_000)
    assert not verify("other", header, body, now=1_700_000_000)
    assert not verify("s3cret", header.replace("t=1700000000", "t=1700000001"), body, now=1_700_000_000)
    assert not verify("s3cret", "v1=" + header.rpartition("v1=")[2], body, now=1_700_000_000)
    assert not verify("s3cret", "garbage", body, now=1_700_000_000)


def test_verify_rejects_replays_older_than_five_minutes() -> None:
    body, headers = render("json", EVENT, secret="s3cret", t=1_700_000_000)
    header = headers["X-Trackrelay-Signature"]
    assert verify("s3cret", header, body, now=1_700_000_300)
    assert not verify("s3cret", header, body, now=1_700_000_301)
    assert not verify("s3cret", header, body, now=1_699_999_699)  # nor from the far future


def test_json_without_a_secret_is_a_bug_not_an_unsigned_delivery() -> None:
    with pytest.raises(ValueError):
        render("json", EVENT, secret="", t=1)
    with pytest.raises(ValueError):
        render_digest("json", "dg", [EVENT], secret="", t=1)


def test_the_event_id_header_is_the_same_on_every_retry() -> None:
    first = render("json", EVENT, secret="s", t=1)
    retry = render("json", EVENT, secret="s", t=999)
    assert first[0] == retry[0] and first[1]["X-Trackrelay-Event-Id"] == retry[1]["X-Trackrelay-Event-Id"]


@pytest.mark.parametrize("n, word", [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"),
                                     (12, "12th"), (13, "13th"), (21, "21st"), (22, "22nd"), (111, "111th")])
def test_ordinals(n: int, word: str) -> None:
    assert ordinal(n) == word


def test_payloads_are_pure() -> None:
    tree = ast.parse((Path(__file__).resolve().parents[1] / "relay" / "notify_payloads.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {n for n in names if n.startswith(("relay.store", "asyncio", "sqlite3", "aiohttp", "socket"))}


@pytest.mark.parametrize("kind", CHAT)
def test_recipient_text_stays_on_one_line_and_in_reading_order(kind: str) -> None:
    tricky = replace(EVENT, subject="a\nb\u2028# c\u2029d\u202egnp.exe\u2066x\x85y")
    text = render(kind, tricky)[0].decode()
    assert not re.search("[\u2028\u2029\u202a-\u202e\u2066-\u2069\x85]", text)
    assert "\\n# c" not in text and "\\nb" not in text
