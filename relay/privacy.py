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
from relay.status import PENDING

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


@dataclass(frozen=True)
class RecipientRow:
    """What erasure reads of one recipient row of the erased address."""

    id: int
    message_id: int
    copy_id: int | None
    status: str
    own_copy: bool  # the copy went to this recipient alone (else shared, or none: untracked)
    others: int  # the message's recipient rows for other addresses


@dataclass(frozen=True)
class ErasurePlan:
    whole: list[int]  # messages sent to them alone: removed whole (the schema cascades)
    shared: list[int]  # messages that went to others too: only their part goes
    own_copies: list[int]  # their own copies in shared messages (their events go with them)
    recipient_ids: list[int]
    still_queued: int  # messages to them not delivered yet: left to go out


def plan_erasure(rows: Sequence[RecipientRow]) -> ErasurePlan:
    """Which rows an erasure removes, the same for both engines. Mail still queued for them
    is left alone: it is the sender's mail in transit (erase again once delivered)."""
    done = [r for r in rows if r.status not in PENDING]
    return ErasurePlan(
        whole=sorted({r.message_id for r in done if not r.others}),
        shared=sorted({r.message_id for r in done if r.others}),
        own_copies=sorted({r.copy_id for r in done if r.others and r.copy_id and r.own_copy}),
        recipient_ids=[r.id for r in done],
        still_queued=len({r.message_id for r in rows if r.status in PENDING}),
    )


def erase_links(urls: Sequence[str | None], address: str) -> tuple[list[str | None], int]:
    """A shared message's link list without the URLs naming the (lowercase) address, and how
    many went. An erased link becomes a gap: the positions of the others are in sent mail."""
    named = [url is not None and address in url.lower() for url in urls]
    return [None if gone else url for gone, url in zip(named, urls)], sum(named)


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


def N_(message: str) -> str:
    """Marks a report line for the panel's catalog (admin/locale); the CLI prints it as is."""
    return message


ReportLine = tuple[str, dict]  # (an English line with %(name)s places, its values)


class Word(str):
    """A report value that is itself a line of the catalog (translated with the line)."""


def privacy_report_lines(p: PrivacyConfig, *, dnt: Sequence[PrivacyRecord], consented: int,
                         due: PurgeCounts | None) -> list[ReportLine]:
    """What this deployment stores, for how long, with which settings - the basis of a
    record of processing. due: what is past retention now. Values that are themselves
    words are lines of the catalog too (the panel translates them, the CLI does not)."""
    erased = sum(1 for r in dnt if r.entry.startswith(ERASED_PREFIX))
    domains = sum(1 for r in dnt if r.entry.startswith("@"))
    lines: list[ReportLine] = [
        (N_("What is stored about recipients"), {}),
        (N_("  per tracked mail: sender, subject, Message-ID, recipient addresses, delivery status;"), {}),
        (N_("  the message body only until every recipient is delivered (then erased for real);"), {}),
        (N_("  per open or click: time, class (human, proxy, prefetch, scanner, self), user agent, IP address"), {}),
        (N_("    IP addresses: truncated (IPv4 /24, IPv6 /48)") if p.anonymize_ip else N_("    IP addresses: kept whole"),
         {}),
        (N_("Kept: %(days)s days, purged daily at %(time)s"), {"days": p.retention_days, "time": p.purge_time})
        if p.retention_days else (N_("Kept: forever (retention off)"), {}),
        (N_("  (events, and mail with no activity since; links in purged mail keep redirecting, recording nothing)"),
         {}),
        (N_("Consent: required (only recipients with a consent record are tracked); %(records)s consent records")
         if p.consent == "required" else N_("Consent: not required; %(records)s consent records"),
         {"records": consented}),
        (N_("Do-not-track: %(addresses)s addresses, %(domains)s domains, %(erased)s erased addresses"),
         {"addresses": len(dnt) - erased - domains, "domains": domains, "erased": erased}),
        (N_("Tracked copies say so: %(disclosure)s, %(optout)s; %(optouts)s addresses opted out with the link"),
         {"disclosure": Word(N_("a disclosure") if p.disclosure_text or p.disclosure_html else N_("no disclosure")),
          "optout": Word(N_("an opt-out link") if p.optout_link else N_("no opt-out link")),
          "optouts": sum(1 for r in dnt if r.source == "link")}),
    ]
    if due is not None:
        lines.append((N_("Past retention now (the next purge removes): %(events)s events, %(messages)s messages,"
                         " %(other)s other rows"),
                      {"events": due.events, "messages": due.messages,
                       "other": due.notifications + due.captured + due.deliveries}))
    lines.append((N_("Access and erasure: trackrelay export ADDRESS, trackrelay erase ADDRESS"
                     " (or GET/DELETE /api/v1/privacy/subjects/ADDRESS)"), {}))
    return lines


def report_text(lines: Sequence[ReportLine], say=lambda text: text) -> str:
    """The report in one language: say() translates a line (and the word values)."""
    return "\n".join(say(line) % {k: say(v) if isinstance(v, Word) else v for k, v in values.items()}
                     for line, values in lines)


def privacy_report(p: PrivacyConfig, *, dnt: Sequence[PrivacyRecord], consented: int,
                   due: PurgeCounts | None) -> str:
    """`trackrelay privacy report`: the report in English."""
    return report_text(privacy_report_lines(p, dnt=dnt, consented=consented, due=due))
