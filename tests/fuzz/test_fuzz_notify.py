"""Webhooks for any input: payloads stay valid JSON and ping nobody; URLs and addresses get a verdict."""
from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from fuzzing import assert_linear, fuzz
from relay.notify_payloads import KINDS, NoticeEvent, render, render_digest
from relay.webhook_target import Refused, address_refusal, check_url

BASE = NoticeEvent(id="ev", type="link.clicked", occurred_at="2026-12-04T11:05:09Z", message_id="1",
                   message_header_id="<m@x>", subject="", recipient="", url="", hit_class="human", nth=3,
                   panel_url="https://panel.example/messages/1")
PIECES = list("<>!@&|*_~`[]()#\\:/- \n\u202eaé") + ["everyone", "channel", "here", "users/all"]
MARKUP = st.lists(st.sampled_from(PIECES)).map("".join)


@fuzz
@given(subject=MARKUP, recipient=MARKUP, url=MARKUP, agent=MARKUP)
def test_any_recipient_text_gives_json_that_pings_nobody(subject: str, recipient: str, url: str,
                                                          agent: str) -> None:
    event = replace(BASE, subject=subject, recipient=recipient, url=url, user_agent=agent)
    for kind in KINDS:
        for body, _ in (render(kind, event, secret="s", t=1), render_digest(kind, "d", [event, event], secret="s", t=1)):
            document = json.loads(body)
            if kind != "json":
                assert not re.search(r"@(everyone|here|channel)", json.dumps(document, ensure_ascii=False))
                assert "\u202e" not in body.decode()


def test_rendering_is_linear_in_the_recipient_text() -> None:
    def make(n: int) -> NoticeEvent:
        text = "<!channel>*@" * (n // 12)
        return replace(BASE, subject=text, recipient=text, url=text, user_agent=text)

    assert_linear(make, lambda event: [render(kind, event, secret="s", t=1) for kind in KINDS])


@fuzz
@given(url=st.text())
def test_any_webhook_url_is_checked_without_crashing(url: str) -> None:
    target = check_url(url)
    assert isinstance(target, Refused) or (target.scheme in ("http", "https") and 0 < target.port < 65536)


@fuzz
@given(value=st.one_of(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
                       st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)))
def test_any_address_gets_an_answer_and_private_ones_never_pass(value: ipaddress._BaseAddress) -> None:
    reason = address_refusal(value)
    plain = value.ipv4_mapped if isinstance(value, ipaddress.IPv6Address) and value.ipv4_mapped else value
    if plain.is_private or plain.is_loopback or plain.is_link_local or plain.is_multicast:
        assert reason is not None


def test_url_checking_is_linear() -> None:
    assert_linear(lambda n: "https://" + "a." * (n // 2) + "example/" + "%41" * n, check_url)
