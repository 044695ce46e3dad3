"""The message page's pure parts: the timeline's geometry and the inert captured copy."""
from __future__ import annotations

from admin.capture_view import html_part, neutralised
from admin.timeline import LEFT, WIDTH, timeline
from relay.records import EventReport


def event(at: float, recipient: str | None, type_: str = "open", cls: str = "human") -> EventReport:
    return EventReport(type_, at, recipient, None, "203.0.113.0", "UA", cls, False)


def test_lanes_per_recipient_on_one_axis_from_sending_to_the_last_event():
    line = timeline([event(110, "bob@x.org"), event(210, "ann@x.org", "click", "scanner"), event(60, None)], 10)
    assert (line.start, line.end) == (10, 210)
    assert [lane.label for lane in line.lanes] == ["", "ann@x.org", "bob@x.org"]
    bob = line.lanes[2].marks[0]
    assert bob.x == round(LEFT + 0.5 * (WIDTH - 2 * LEFT), 1) and (bob.type, bob.cls) == ("open", "human")
    assert line.lanes[1].marks[0].x == WIDTH - LEFT
    assert timeline([], 10) is None


def test_a_captured_copy_loses_every_target_and_keeps_its_text():
    raw = (b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
           b"<p>Hi =C3=A1</p><a HREF=3D\"https://t.example/c/tok/0\">go</a>"
           b"<img src=3D'https://t.example/o/tok.gif'><meta http-equiv=3Drefresh content=3D0>"
           b"<form action=3D/x><button formaction=3D/y>s</button></form>")
    html = html_part(raw)
    out = neutralised(html).decode()
    assert "Hi á" in out and "go</a>" in out
    for active in ("HREF=", "src=", "http-equiv=", "action=/x", "formaction="):
        assert f" {active}" not in out and f"data-inert-{active}" in out
    assert html_part(b"Content-Type: text/plain\r\n\r\nhi") is None
