"""Webhook payloads for any recipient text: valid JSON, nobody pinged, linear time."""
from __future__ import annotations

import json
import re
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from fuzzing import assert_linear, fuzz
from relay.notify_payloads import KINDS, NoticeEvent, render, render_digest

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
        for body, _ in (render(kind, event, secret="s", t=1), render_digest(kind, "d", [event, event])):
            document = json.loads(body)
            if kind != "json":
                assert not re.search(r"@(everyone|here|channel)", json.dumps(document, ensure_ascii=False))
                assert "\u202e" not in body.decode()


def test_rendering_is_linear_in_the_recipient_text() -> None:
    def make(n: int) -> NoticeEvent:
        text = "<!channel>*@" * (n // 12)
        return replace(BASE, subject=text, recipient=text, url=text, user_agent=text)

    assert_linear(make, lambda event: [render(kind, event) for kind in KINDS])
