"""`trackrelay dnt|consent add|del|list`, `consent import`, `purge`, `erase`, `export`,
`privacy report` and `user del --erase`: the privacy lifecycle on the command line."""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from relay.config import Config
from relay.notify_rules import rfc3339
from relay.policy import privacy_entry
from relay.privacy import (
    PURGE_BATCH, MAX_REJECTS_SHOWN, counts_text, describe_entry, erasure_text, parse_consent_csv, privacy_report,
    retention_cutoff, subject_json,
)
from relay.purger import purge_all
from relay.store import Store


def add_parsers(verbs: Any, common: argparse.ArgumentParser) -> None:
    for kind, what in (("dnt", "ADDRESS or @DOMAIN never tracked"), ("consent", "ADDRESS that consented")):
        sub = verbs.add_parser(kind, help=f"privacy list: {what}").add_subparsers(dest="action", required=True)
        for action in ("add", "del"):
            one = sub.add_parser(action, parents=[common])
            one.add_argument("entry", metavar="ADDRESS")
            one.set_defaults(handler=_edit, kind=kind)
        sub.add_parser("list", parents=[common]).set_defaults(handler=_list, kind=kind)
        if kind == "consent":
            load = sub.add_parser("import", parents=[common], help="CSV rows: address,date,source (idempotent)")
            load.add_argument("file", type=Path)
            load.add_argument("--json", action="store_true", help="only a JSON summary")
            load.set_defaults(handler=_consent_import)
    purge = verbs.add_parser("purge", parents=[common], help="remove what is past privacy.retention_days now")
    purge.add_argument("--dry-run", action="store_true", help="only count what would go")
    purge.add_argument("--json", action="store_true", help="only a JSON summary")
    purge.set_defaults(handler=_purge)
    erase = verbs.add_parser("erase", parents=[common], help="remove everything held about a recipient address")
    erase.add_argument("address")
    erase.add_argument("--keep-trackable", action="store_true", help="do not add them to do-not-track")
    erase.add_argument("--json", action="store_true", help="only a JSON summary")
    erase.set_defaults(handler=_erase)
    export = verbs.add_parser("export", parents=[common], help="everything held about an address, as JSON")
    export.add_argument("address")
    export.set_defaults(handler=_export)
    report = verbs.add_parser("privacy", help="what this deployment stores").add_subparsers(dest="action",
                                                                                             required=True)
    report.add_parser("report", parents=[common]).set_defaults(handler=_report)


def _progress(args: Any, text: str) -> None:
    """On a terminal, a line rewritten in place; otherwise (or with --json) nothing."""
    if sys.stderr.isatty() and not getattr(args, "json", False):
        print(f"\r{text}\033[K", end="", file=sys.stderr, flush=True)


def _done(args: Any) -> None:
    if sys.stderr.isatty() and not getattr(args, "json", False):
        print("\r\033[K", end="", file=sys.stderr)


async def _edit(store: Store, args: Any) -> int:
    entry = privacy_entry(args.kind, args.entry)
    if args.action == "add":
        added = await store.privacy_add(args.kind, entry, source="cli")
        print(f"{args.kind}: {'added' if added else 'already listed'} {entry}")
    elif await store.privacy_del(args.kind, entry):
        print(f"{args.kind}: removed {entry}")
    else:
        raise ValueError(f"{args.kind}: not listed: {entry}")
    return 0


async def _list(store: Store, args: Any) -> int:
    """One entry per line; after a tab: when, from where and by whom it was recorded."""
    for r in await store.privacy_records(args.kind):
        columns = [describe_entry(r.entry), rfc3339(r.recorded_at), r.source or "-", r.recorded_by or "-"]
        if r.given_at is not None:
            columns.append("given " + rfc3339(r.given_at))
        print("\t".join(columns))
    return 0


async def _consent_import(store: Store, args: Any) -> int:
    try:
        text = args.file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {args.file}: {e}") from None
    parsed = parse_consent_csv(text, f"import:{args.file.name}", time.time())
    added = 0
    for start in range(0, len(parsed.records), PURGE_BATCH):
        added += await store.privacy_add_many("consent", parsed.records[start:start + PURGE_BATCH])
        _progress(args, f"importing: {start + PURGE_BATCH} of {len(parsed.records)} rows")
    _done(args)
    summary = {"lines": parsed.lines, "added": added, "already": len(parsed.records) - added,
               "rejected": len(parsed.rejected)}
    if args.json:
        print(json.dumps({**summary, "rejects": [{"line": n, "error": why} for n, why in parsed.rejected]}))
    else:
        for number, why in parsed.rejected[:MAX_REJECTS_SHOWN]:
            print(f"{args.file.name}:{number}: {why}", file=sys.stderr)
        print(f"{parsed.lines} lines: {added} added, {summary['already']} already recorded,"
              f" {len(parsed.rejected)} rejected")
    return 1 if parsed.rejected else 0


async def _purge(store: Store, args: Any) -> int:
    cfg: Config = args.cfg
    cutoff = retention_cutoff(time.time(), cfg.privacy.retention_days)
    if cutoff is None:
        raise ValueError("privacy.retention_days is 0: data is kept forever, nothing to purge")
    if args.dry_run:
        counts = await store.purge_preview(cutoff)
    else:
        counts = await purge_all(store, cutoff, progress=lambda c: _progress(args, f"purging: {counts_text(c)}"))
        _done(args)
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "before": rfc3339(cutoff), **asdict(counts)}))
    else:
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {counts_text(counts)} from before {rfc3339(cutoff)}"
              f" ({cfg.privacy.retention_days} days)")
    return 0


async def _erase(store: Store, args: Any) -> int:
    address = privacy_entry("consent", args.address)  # an address, not a domain
    counts = await store.erase_subject(address, keep_trackable=args.keep_trackable, now=time.time())
    if args.json:
        print(json.dumps({"address": address, "kept_trackable": args.keep_trackable, **asdict(counts)}))
    else:
        print(erasure_text(address, counts, args.keep_trackable))
    return 0


async def _export(store: Store, args: Any) -> int:
    address = privacy_entry("consent", args.address)
    print(json.dumps(subject_json(await store.subject(address), time.time()), indent=2, ensure_ascii=False))
    return 0


async def _report(store: Store, args: Any) -> int:
    p = args.cfg.privacy
    cutoff = retention_cutoff(time.time(), p.retention_days)
    print(privacy_report(p, dnt=await store.privacy_records("dnt"), consented=len(await store.privacy_list("consent")),
                         due=None if cutoff is None else await store.purge_preview(cutoff)))
    return 0


async def erase_user(store: Store, args: Any, user_id: int) -> int:
    """`user del --erase`: the user's mail in batches (with progress), then the user."""
    gone = 0
    while batch := await store.erase_user_mail(user_id, PURGE_BATCH):
        gone += batch
        _progress(args, f"erasing: {gone} messages")
    _done(args)
    return gone
