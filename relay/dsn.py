"""No I/O: build a delivery status notification (RFC 3464 multipart/report) for a bounce."""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from email.utils import format_datetime, make_msgid
from datetime import datetime, timezone

from relay.headers import header_block


@dataclass(frozen=True)
class Failure:
    recipient: str
    status: str  # enhanced status code, e.g. "5.1.1"
    diagnostic: str  # the upstream's reply, e.g. "550 5.1.1 no such user"


def build_dsn(*, reporting_mta: str, original_sender: str, failures: list[Failure],
              original: bytes, queue_id: str, arrival: float, now: float) -> bytes:
    boundary = "=_trackrelay_" + secrets.token_hex(12)
    when = format_datetime(datetime.fromtimestamp(now, timezone.utc))
    arrived = format_datetime(datetime.fromtimestamp(arrival, timezone.utc))
    listing = "\r\n".join(f"  <{f.recipient}>: {_one_line(f.diagnostic)}" for f in failures)
    per_recipient = "\r\n\r\n".join(
        f"Final-Recipient: rfc822; {f.recipient}\r\n"
        f"Action: failed\r\n"
        f"Status: {f.status}\r\n"
        f"Diagnostic-Code: smtp; {_one_line(f.diagnostic)}"
        for f in failures
    )
    text = (
        f"This is the mail relay at {reporting_mta}.\r\n\r\n"
        "Your message could not be delivered to one or more recipients.\r\n"
        "It has been returned below (headers only).\r\n\r\n"
        f"{listing}\r\n"
    )
    parts = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{original_sender}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {when}",
        f"Message-ID: {make_msgid(domain=reporting_mta)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated delivery status notification.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        text,
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {reporting_mta}\r\nX-Trackrelay-Queue-ID: {queue_id}\r\nArrival-Date: {arrived}\r\n",
        per_recipient,
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "",
    ]
    head = "\r\n".join(parts).encode("utf-8") + b"\r\n" + header_block(original)
    return head + f"\r\n--{boundary}--\r\n".encode()


def _one_line(text: str) -> str:
    return " ".join(text.split())
