"""The privacy lifecycle's rules (pure): when retention purges and what, the access
request's JSON, the consent file's rows, the summaries the CLI and API print.

The store runs the primitives (relay/store/*_privacy.py); `trackrelay purge|erase|export|
consent import|privacy report`, /api/v1/privacy/subjects and the running server's daily
purge (relay/purger.py) call them with what these functions decide.
"""
from __future__ import annotations

import csv
import io
from dataclasses import astuple, dataclass, fields
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Sequence

from relay.config import PrivacyConfig
from relay.notify_rules import rfc3339
from relay.policy import ERASED_PREFIX, privacy_entry
from relay.records import ErasureCounts, PrivacyRecord, PurgeCounts, SubjectData

DAY = 86400.0
PURGE_BATCH = 500  # rows of each kind per transaction: short enough never to stall intake or hits


def retention_cutoff(now: float, retention_days: int) -> float | None:
    """Data older than this is purged; None when retention is off (0 days: keep forever)."""
    return now - retention_days * DAY if retention_days > 0 else None


def next_purge_at(now: float, hour: int, minute: int, tz: tzinfo | None = None) -> float:
    """The next HH:MM (the machine's local time unless tz) after now, as unix seconds."""
    local = datetime.fromtimestamp(now, tz or timezone.utc).astimezone(tz)
    at = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if at.timestamp() <= now:
        at = (at + timedelta(days=1)).replace(hour=hour, minute=minute)
    return at.timestamp()


def counts_text(counts: PurgeCounts | ErasureCounts) -> str:
    """'3 events, 1 message' - the non-zero counts, or 'nothing'."""
    parts = [f"{n} {_label(f.name, n)}" for f, n in zip(fields(counts), astuple(counts))
             if n and f.name != "still_queued"]
    return ", ".join(parts) or "nothing"


def _label(name: str, n: int) -> str:
    singular = {"messages": "message", "events": "event", "notifications": "notification", "copies": "copy",
                "recipients": "recipient row", "links": "link", "deliveries": "webhook delivery",
                "captured": "captured copy"}[name]
    if n == 1:
        return singular
    return {"copy": "copies", "webhook delivery": "webhook deliveries", "captured copy": "captured copies"}.get(
        singular, singular + "s")


def erasure_text(address: str, counts: ErasureCounts, keep_trackable: bool) -> str:
    line = f"erased {address}: {counts_text(counts)}"
    line += "; kept trackable" if keep_trackable else "; on the do-not-track list (as a digest)"
    if counts.still_queued:
        line += (f"; {counts.still_queued} mail to them still queued: it goes out as sent,"
                 " erase again once delivered")
    return line


def subject_json(data: SubjectData, now: float) -> dict:
    """The access request's answer (`trackrelay export`, GET /api/v1/privacy/subjects/<address>)."""
    return {
        "address": data.address,
        "generated_at": rfc3339(now),
        "mails": [{
            "id": m.id, "message_id": m.message_id, "subject": m.subject, "sender": m.sender,
            "received_at": rfc3339(m.received_at), "status": m.status,
            "delivered_at": rfc3339(m.delivered_at) if m.delivered_at else None,
            "tracked": {"opens": m.tracked_opens, "clicks": m.tracked_clicks},
            "events": [{"type": e.type, "at": rfc3339(e.at), "class": e.cls, "ip": e.ip, "user_agent": e.user_agent,
                        "url": e.url, "shared_copy": e.shared} for e in m.events],
        } for m in data.mails],
        "do_not_track": [record_json(r) for r in data.do_not_track],
        "consent": [record_json(r) for r in data.consent],
        "notifications": [{"at": rfc3339(at), "text": text} for at, text in data.notifications],
        "captured_copies": data.captured,
    }


def record_json(r: PrivacyRecord) -> dict:
    out = {"entry": r.entry, "recorded_at": rfc3339(r.recorded_at), "recorded_by": r.recorded_by or None,
           "source": r.source or None}
    if r.given_at is not None:
        out["given_at"] = rfc3339(r.given_at)
    return out


def describe_entry(entry: str) -> str:
    """How a list shows an entry: an erased address is only its digest."""
    return f"{entry}  (an erased address)" if entry.startswith(ERASED_PREFIX) else entry


@dataclass(frozen=True)
class ConsentFile:
    records: tuple[PrivacyRecord, ...]
    rejected: tuple[tuple[int, str], ...]  # (line number, why)
    lines: int  # data lines read (a header line is not counted)


MAX_REJECTS_SHOWN = 20


def parse_consent_csv(text: str, source: str, now: float) -> ConsentFile:
    """Rows of `address,date,source` (date: YYYY-MM-DD or RFC 3339, empty = unknown; source
    optional, else the file's). A first line naming the columns is skipped."""
    records, rejected, lines = [], [], 0
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if number == 1 and row[0].strip().lower() in ("address", "email", "e-mail"):
            continue
        lines += 1
        try:
            address = privacy_entry("consent", row[0])
            given = _date(row[1]) if len(row) > 1 and row[1].strip() else None
        except ValueError as e:
            rejected.append((number, str(e)))
            continue
        if given is not None and given > now:
            rejected.append((number, f"consent dated in the future: {row[1].strip()!r}"))
            continue
        row_source = row[2].strip() if len(row) > 2 and row[2].strip() else ""
        records.append(PrivacyRecord(address, now, "", f"{source} ({row_source})" if row_source else source, given))
    return ConsentFile(tuple(records), tuple(rejected), lines)


def _date(value: str) -> float:
    value = value.strip()
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a date: {value!r} (expected YYYY-MM-DD)") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


def privacy_report(p: PrivacyConfig, *, dnt: Sequence[PrivacyRecord], consented: int,
                   due: PurgeCounts | None) -> str:
    """`trackrelay privacy report` and the admins' privacy page: what this deployment stores,
    for how long, with which settings - the basis of a record of processing. due: what is
    past retention now."""
    erased = sum(1 for r in dnt if r.entry.startswith(ERASED_PREFIX))
    domains = sum(1 for r in dnt if r.entry.startswith("@"))
    keep = f"{p.retention_days} days, purged daily at {p.purge_time}" if p.retention_days else "forever (retention off)"
    consent = "required (only recipients with a consent record are tracked)" if p.consent == "required" else "not required"
    lines = [
        "What is stored about recipients",
        "  per tracked mail: sender, subject, Message-ID, recipient addresses, delivery status;",
        "  the message body only until every recipient is delivered (then erased for real);",
        "  per open or click: time, class (human, proxy, prefetch, scanner, self), user agent, IP address",
        f"    IP addresses: {'truncated (IPv4 /24, IPv6 /48)' if p.anonymize_ip else 'kept whole'}",
        f"Kept: {keep}",
        "  (events, and mail with no activity since; links in purged mail keep redirecting, recording nothing)",
        f"Consent: {consent}; {consented} consent records",
        f"Do-not-track: {len(dnt) - erased - domains} addresses, {domains} domains, {erased} erased addresses",
        f"Tracked copies say so: {'a disclosure' if p.disclosure_text or p.disclosure_html else 'no disclosure'}, "
        f"{'an opt-out link' if p.optout_link else 'no opt-out link'}; "
        f"{sum(1 for r in dnt if r.source == 'link')} addresses opted out with the link",
    ]
    if due is not None:
        lines.append(f"Past retention now (the next purge removes): {counts_text(due)}")
    lines.append("Access and erasure: trackrelay export ADDRESS, trackrelay erase ADDRESS"
                 " (or GET/DELETE /api/v1/privacy/subjects/ADDRESS)")
    return "\n".join(lines)
