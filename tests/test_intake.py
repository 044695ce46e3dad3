"""Intake end to end: what a mail's headers ask for, as every layer sees them, over real SMTP
into the relay and out to a real sink."""
from __future__ import annotations

import pytest

from conftest import relay_to
from test_smtp_relay import send, wait_status
from test_tracking_e2e import TOKEN, html_mail

CLICK = b"http://127.0.0.1:8080/c/"


def parts(data: bytes) -> tuple[bytes, bytes]:
    """(text part, HTML part) of html_mail's multipart/alternative, as sent."""
    _, text, html = data.split(b"--b1\r\n")[:3]
    return text, html


# Postmark's link values, as the relay honours them: HTML links are rewritten with text links
# or without; text links never alone (TextOnly asks to leave HTML links alone, so nothing is).
@pytest.mark.parametrize("value, html_links, text_links", [
    ("None", False, False), ("HtmlOnly", True, False), ("HtmlAndText", True, True), ("TextOnly", False, False)])
async def test_postmark_link_values_mark_what_is_tracked(value, html_links, text_links, sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path)
    headers = f"X-PM-TrackOpens: true\r\nX-PM-TrackLinks: {value}\r\n"
    await send(app.port("smtp"), html_mail(extra_headers=headers))
    [m] = await sink.wait_for(1)
    text, html = parts(m.data)
    assert TOKEN.search(m.data), "opens were asked for"
    assert (CLICK in html, CLICK in text) == (html_links, text_links), m.data.decode()
    row = await wait_status(app, 1, "sent")
    assert bool(row["track_clicks"]) == (html_links or text_links)
