#!/usr/bin/env python3
"""Turn the bench's raw results (JSON lines) into the tables `make bench` prints.

  report.py RESULTS.jsonl ENV.json OUT.md

Writes the markdown report to OUT.md (targets first) and prints it with the targets
table last.
Ratios are taken per repetition (the relay run against the reference run of the same
round, same sessions and recipients) and the median of those is reported, so slow and
fast phases of the machine hit both sides alike.
"""
from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

TARGET_SMTP = 0.6     # relay (tracking off) / Postfix, end to end, 20 sessions
TARGET_TRACK = 0.5    # relay (tracking on) / Postfix, end to end, 1 and 3 recipients
TARGET_TRACK_PG = 0.6  # the same on PostgreSQL (issue "one store contract, two engines")
TARGET_PG = 0.8       # relay on PostgreSQL / relay on SQLite, same round (SMTP e2e, hits rps)
STORE_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
TARGET_REWRITE = 2.0  # rewrite_message / bare lxml.html parse+tostring
TARGET_HITS = 0.2     # relay rps / nginx rps
TARGET_P99 = 15.0     # ms
TARGET_NOTIFY_P99 = 1000.0  # ms from a person's open to the webhook's POST, under a flood of opens
TARGET_NOTIFY_RPS = 0.9     # pixel rps with a webhook / with none


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=0):
    if x is None:
        return "–"
    return f"{x:,.{nd}f}".replace(",", " ")


def spread(xs, nd=0):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    if len(xs) == 1:
        return fmt(xs[0], nd)
    return f"{fmt(med(xs), nd)} ({fmt(min(xs), nd)}–{fmt(max(xs), nd)})"


def ratio_fmt(x, target):
    """Two decimals, or three where two would look like the target itself (0.598 vs 0.6)."""
    if x is None:
        return "–"
    return f"{x:.3f}" if round(x, 2) == round(target, 2) else f"{x:.2f}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def load(path: Path) -> list[dict]:
    rows = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return rows


def smtp_table(smtp, block, ratios):
    """Rows of one block; fills ratios[(conc, rcpts)] with relay/Postfix medians."""
    rows = [r for r in smtp if r.get("block", "off") == block]
    post = {(int(r["conc"]), int(r["rcpts"]), r.get("rep")): r for r in rows if r["target"] == "postfix"}
    groups = defaultdict(list)
    for r in rows:
        groups[(r["target"], int(r["conc"]), int(r["rcpts"]), r.get("tracking", "-"))].append(r)
    out = ["| target | sessions | rcpt/mail | tracking | upstream msgs/mail | accept msg/s | e2e msg/s | relay / Postfix (e2e) | status |",
           "|---|---:|---:|---|---:|---:|---:|---:|---|"]
    order = {"sink": 0, "postfix": 1, "relay": 2}
    for key in sorted(groups, key=lambda k: (k[2], k[1], order.get(k[0], 9))):
        target, conc, rcpts, tracking = key
        rs = groups[key]
        rr = []
        if target == "relay":
            for r in rs:
                p = post.get((conc, rcpts, r.get("rep")))
                if p and p.get("e2e_mps") and r.get("e2e_mps"):
                    rr.append(r["e2e_mps"] / p["e2e_mps"])
            ratios[(conc, rcpts)] = med(rr)
        status = ", ".join(sorted({r["status"] for r in rs}))
        errs = [r["first_error"] for r in rs if r.get("first_error")]
        if errs:
            status += f" ({errs[0][:80]})"
        out.append(f"| {target} | {conc} | {rcpts} | {tracking} | {rs[0].get('factor', 1)} | "
                   f"{spread([r['accept_mps'] for r in rs])} | {spread([r['e2e_mps'] for r in rs])} | "
                   f"{fmt(med(rr), 2) if rr else '–'} | {status} |")
    return out + [""]


def heading(title: str, notes: list[str]) -> list[str]:
    """A section's title and the notes the run left for it (a part not available, say)."""
    return [title, ""] + [f"> {n}" for n in notes]


def stores_of(rows, default):
    """The stores the relay ran on, SQLite first (results without a store label: the run's STORE)."""
    found = {r.get("store", default) for r in rows if r.get("target") == "relay"}
    return sorted(found - {"-"}, key=lambda st: (st != "sqlite", st))


def smtp_section(rows, notes, targets, default_store):
    smtp = [r for r in rows if r.get("kind") == "smtp"]
    out = heading("## 1. SMTP end to end: relay vs Postfix vs sink (issues \"submission relay\" and \"Tracking\")", notes.get("smtp", []))
    if not smtp:
        out += ["", "no SMTP results", ""]
        return out
    first = smtp[0]
    reps = len({r.get("rep") for r in smtp})
    out += ["", f"smtp-source, {first['n']} mails of {first['msg_bytes']} bytes per run, a new connection per "
                f"message, {reps} round(s) (median (min–max)). accept = until smtp-source had its last 250; "
                "e2e = until the sink counted every message. Rates are submitted mails/s. "
                "relay / Postfix = ratio of e2e rates in the same round (median over rounds); with both stores, "
                "each store's relay runs right after its own sink and Postfix runs in that round.", ""]
    stores = stores_of(smtp, default_store)
    for st in stores:
        name = STORE_NAMES.get(st, st)
        mine = [r for r in smtp if r.get("store", default_store) == st]
        track_target = TARGET_TRACK_PG if st == "postgresql" else TARGET_TRACK
        out += [f"### 1a. Tracking off, relay on {name} (issue \"submission relay\")", ""]
        off: dict = {}
        out += smtp_table(mine, "off", off)
        out += [f"### 1b. Tracking on, relay on {name}: the bench user's policy mode=always, a rewritten copy "
                "per recipient (issue \"Tracking\")", ""]
        on: dict = {}
        out += smtp_table(mine, "on", on)
        convs = sorted({c for c, _ in off})
        big = max(convs) if convs else None
        v = off.get((big, 1)) if big else None
        targets.append((f"{name}: SMTP relay (tracking off) / Postfix, {big or '?'} sessions", ratio_fmt(v, TARGET_SMTP),
                        f">= {TARGET_SMTP}", verdict(None if v is None else v >= TARGET_SMTP)))
        for c in convs:
            if c != big:
                targets.append((f"{name}: SMTP relay (tracking off) / Postfix, {c} session(s) (info)",
                                fmt(off.get((c, 1)), 2), "–", "info"))
        for rc in (1, 3):
            found = sorted((c, v) for (c, r), v in on.items() if r == rc)
            for c, v in found:
                targets.append((f"{name}: SMTP relay (tracking on) / Postfix, {rc} rcpt/mail, {c} sessions",
                                ratio_fmt(v, track_target), f">= {track_target}",
                                verdict(None if v is None else v >= track_target)))
            if not found:
                targets.append((f"{name}: SMTP relay (tracking on) / Postfix, {rc} rcpt/mail", "–", f">= {track_target}", "n/a"))
    if len(stores) == 2:
        out += engines_smtp(smtp, targets)
    return out


def per_round_ratio(rows, key, value):
    """Median over rounds of (PostgreSQL / SQLite) for rows sharing key(row) and round."""
    by = defaultdict(dict)
    for r in rows:
        if r.get(value):
            by[(key(r), r.get("rep"))][r.get("store")] = r[value]
    ratios = defaultdict(list)
    for (k, _), v in by.items():
        if "sqlite" in v and "postgresql" in v:
            ratios[k].append(v["postgresql"] / v["sqlite"])
    return {k: (med(rs), rs) for k, rs in ratios.items()}


def engines_smtp(smtp, targets):
    """PostgreSQL beside SQLite: the relay's e2e rate on each, same round, same block."""
    relay = [r for r in smtp if r.get("target") == "relay"]
    ratios = per_round_ratio(relay, lambda r: (r.get("block"), int(r["conc"]), int(r["rcpts"])), "e2e_mps")
    out = ["### 1c. PostgreSQL beside SQLite (issue \"one store contract, two engines\")", "",
           "relay on PostgreSQL / relay on SQLite, e2e rate, per round (median, and each round).", "",
           "| tracking | sessions | rcpt/mail | PostgreSQL / SQLite | rounds |", "|---|---:|---:|---:|---|"]
    big = max((c for (_, c, _) in ratios), default=None)
    for (block, conc, rcpts), (v, rs) in sorted(ratios.items()):
        out.append(f"| {block} | {conc} | {rcpts} | {ratio_fmt(v, TARGET_PG)} | {', '.join(f'{x:.2f}' for x in rs)} |")
        info = conc != big
        targets.append((f"PostgreSQL / SQLite, SMTP tracking {block}, {rcpts} rcpt/mail, {conc} session(s)"
                        + (" (info)" if info else ""), ratio_fmt(v, TARGET_PG), "–" if info else f">= {TARGET_PG}",
                        "info" if info else verdict(v >= TARGET_PG)))
    return out + [""]


def rewrite_section(rows, notes, targets):
    rw = [r for r in rows if r.get("kind") == "rewrite"]
    out = heading("## 2. Tracking rewrite cost per message (issue \"Tracking\")", notes.get("rewrite", []))
    if not rw:
        out += ["", "no rewrite results", ""]
        return out
    runs = rw[0]["lxml"]["runs"]
    out += ["", f"Per call, median of {runs} calls per case (p90 in brackets), interleaved in rounds of 5 calls "
                "per case. Times are the benchmark thread's CPU time (time.thread_time_ns): on a shared machine "
                "wall time also counts the slices the scheduler gives to other processes, which hit long calls "
                "harder than short ones. ratio = rewrite/lxml per round, median over rounds (CPU time; the "
                "wall-time ratio beside it). lxml = lxml.html.document_fromstring + tostring of the same "
                "message's HTML part(s); 3 copies = relay.rewrite.rewrite_copies for three recipients (one rewrite, "
                "three tokens stamped in); html-only = relay.rewrite_html on the decoded HTML (no MIME layer); "
                "calib = a fixed Python loop (if it moves between runs, the machine was busy).", "",
            "| message | bytes | HTML bytes | links | pixel | rewrite_message ms | lxml parse+tostring ms | ratio (CPU) | ratio (wall) | 3 copies ms | html-only ms | calib ms | status |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rw:
        rew = r.get("rewrite")
        lx = r["lxml"]
        html = r.get("html")
        three = r.get("copies3")
        status = r["status"] + (f": {r['error']}" if r.get("error") else "") + (
            f" (skipped: {r['skipped']})" if r.get("skipped") else "")
        out.append(
            f"| {r['file']} | {r['bytes']} | {r['html_bytes']} | {r.get('links', '–')} | "
            f"{'yes' if r.get('pixel') else ('no' if 'pixel' in r else '–')} | "
            f"{fmt(rew['median_ms'], 3) + ' (' + fmt(rew['p90_ms'], 3) + ')' if rew else '–'} | "
            f"{fmt(lx['median_ms'], 3)} ({fmt(lx['p90_ms'], 3)}) | {ratio_fmt(r.get('ratio'), TARGET_REWRITE)} | "
            f"{fmt(r.get('wall_ratio'), 2)} | {fmt(three['median_ms'], 3) if three else '–'} | "
            f"{fmt(html['median_ms'], 3) if html else '–'} | {fmt(r['calib']['median_ms'], 3)} | {status} |")
        ok = None if r.get("ratio") is None else (r["ratio"] <= TARGET_REWRITE and r["status"] == "ok")
        targets.append((f"rewrite / bare lxml parse (CPU time), {r['file']}", ratio_fmt(r.get("ratio"), TARGET_REWRITE),
                        f"<= {TARGET_REWRITE}",
                        verdict(ok)))
    out.append("")
    return out


def hits_section(rows, notes, targets, default_store):
    hs = [r for r in rows if r.get("kind") == "hits"]
    out = heading("## 3. Hits server: pixel and click redirect vs nginx (issue \"Hits server\")", notes.get("hits", []))
    if not hs:
        out += ["", "no hits results", ""]
        targets.append(("hits: relay rps / nginx rps", "–", f">= {TARGET_HITS}", "n/a"))
        return out
    first = hs[0]
    out += ["", f"wrk -t{first['threads']} -c{first['conns']} -d{first['dur']} --latency after a warm-up; "
                "stored = rows added to the relay's events table (after a settle wait); "
                "lost = requests - stored (if positive).", "",
            "| target | endpoint | rps | p50 ms | p99 ms | requests | stored | lost | errors | vs nginx rps | status |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    ngx = {(r["endpoint"], r.get("rep")): r for r in hs if r["target"] == "nginx"}
    groups = defaultdict(list)
    for r in hs:
        groups[(r["endpoint"], r["target"], "-" if r["target"] == "nginx" else r.get("store", default_store))].append(r)
    stores = stores_of(hs, default_store)
    for (endpoint, target, st), rs in sorted(groups.items(),
                                             key=lambda kv: (kv[0][0], kv[0][1] != "nginx", kv[0][2] != "sqlite")):
        rr = []
        if target == "relay":
            for r in rs:
                n = ngx.get((endpoint, r.get("rep")))
                if n and n.get("rps") and r.get("rps"):
                    rr.append(r["rps"] / n["rps"])
        errors = sum((r.get("non_2xx_3xx") or 0) + (r.get("socket_errors") or 0) for r in rs)
        status = ", ".join(sorted({r["status"] for r in rs}))
        if any(r.get("error") for r in rs):
            status += ": " + next(r["error"] for r in rs if r.get("error"))[:100]
        stored = [r.get("stored") for r in rs]
        lost = [r.get("lost") for r in rs]
        shown = f"{target} ({STORE_NAMES.get(st, st)})" if target == "relay" and len(stores) > 1 else target
        out.append(f"| {shown} | {endpoint} | {spread([r.get('rps') for r in rs])} | "
                   f"{spread([r.get('p50_ms') for r in rs], 2)} | {spread([r.get('p99_ms') for r in rs], 2)} | "
                   f"{sum(r.get('requests') or 0 for r in rs)} | "
                   f"{sum(s for s in stored if s is not None) if any(s is not None for s in stored) else '–'} | "
                   f"{sum(x for x in lost if x is not None) if any(x is not None for x in lost) else '–'} | "
                   f"{errors} | {fmt(med(rr), 2) if rr else '–'} | {status} |")
        if target == "relay":
            on = f" on {STORE_NAMES.get(st, st)}" if len(stores) > 1 else ""
            ratio = med(rr)
            p99 = max((r["p99_ms"] for r in rs if r.get("p99_ms") is not None), default=None)
            lost_total = sum(x for x in lost if x is not None) if any(x is not None for x in lost) else None
            targets.append((f"hits {endpoint}: relay{on} rps / nginx rps", ratio_fmt(ratio, TARGET_HITS), f">= {TARGET_HITS}",
                            verdict(None if ratio is None else ratio >= TARGET_HITS)))
            ngx_p99 = max((r["p99_ms"] for r in groups.get((endpoint, "nginx", "-"), []) if r.get("p99_ms") is not None),
                          default=None)
            context = f" (nginx, same rounds: {fmt(ngx_p99, 2)} ms)" if ngx_p99 is not None else ""
            targets.append((f"hits {endpoint}: relay{on} p99, worst run{context}", f"{fmt(p99, 2)} ms",
                            f"<= {TARGET_P99} ms", verdict(None if p99 is None else p99 <= TARGET_P99)))
            targets.append((f"hits {endpoint}: relay{on}, lost hits (requests - stored)", fmt(lost_total), "0",
                            verdict(None if lost_total is None else lost_total == 0 and errors == 0)))
    out.append("")
    if len(stores) == 2:
        ratios = per_round_ratio([r for r in hs if r["target"] == "relay"], lambda r: r["endpoint"], "rps")
        for endpoint, (v, rs) in sorted(ratios.items()):
            targets.append((f"PostgreSQL / SQLite, hits {endpoint} rps (rounds: {', '.join(f'{x:.2f}' for x in rs)})",
                            ratio_fmt(v, TARGET_PG), f">= {TARGET_PG}", verdict(v >= TARGET_PG)))
    return out


def notify_section(rows, notes, targets, default_store):
    ns = [r for r in rows if r.get("kind") == "notify"]
    out = heading("## 4. Notifications under a flood of opens (issue \"notifications\")", notes.get("notify", []))
    if not ns:
        return out + ["", "no notify results", ""]
    out += ["", f"wrk -c{ns[0]['conns']} -d{ns[0]['dur']} drives human opens on one copy; meanwhile {ns[0]['probes']} "
                "people open other copies for the first time. latency = from the open's request to the signed "
                "webhook's POST at a receiver started by the bench.", "",
            "| store | p50 ms | p99 ms | max ms | notices sent | lost | pixel rps, webhook on / off | status |",
            "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in ns:
        name = STORE_NAMES.get(r.get("store", default_store), r.get("store", default_store))
        out.append(f"| {name} | {fmt(r.get('p50_ms'), 1)} | {fmt(r.get('p99_ms'), 1)} | {fmt(r.get('max_ms'), 1)} | "
                   f"{r.get('sent', '–')} | {r.get('lost', '–')} | {fmt(r.get('rps_ratio'), 3)} | "
                   f"{r['status']}{': ' + r['error'] if r.get('error') else ''} |")
        p99, ratio, lost = r.get("p99_ms"), r.get("rps_ratio"), r.get("lost")
        targets.append((f"{name}: notify open -> webhook p99", f"{fmt(p99, 1)} ms", f"<= {TARGET_NOTIFY_P99:g} ms",
                        verdict(None if p99 is None else p99 <= TARGET_NOTIFY_P99 and lost == 0)))
        targets.append((f"{name}: notify pixel rps, webhook on / off", ratio_fmt(ratio, TARGET_NOTIFY_RPS),
                        f">= {TARGET_NOTIFY_RPS}", verdict(None if ratio is None else ratio >= TARGET_NOTIFY_RPS)))
    return out + [""]


def main() -> int:
    results, env_path, md_path = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    rows = load(results)
    env = json.loads(env_path.read_text()) if env_path.exists() else {}
    notes = defaultdict(list)
    for r in rows:
        if r.get("kind") == "note":
            notes[r["part"]].append(r["text"])
    targets: list[tuple[str, str, str, str]] = []
    parts = env.get("parts", ["smtp", "rewrite", "hits"])
    body = []
    store = env.get("store", "sqlite")  # results without a store label come from a run on this one
    if "smtp" in parts:
        body += smtp_section(rows, notes, targets, store)
    if "rewrite" in parts:
        body += rewrite_section(rows, notes, targets)
    if "hits" in parts:
        body += hits_section(rows, notes, targets, store)
    if "notify" in parts:
        body += notify_section(rows, notes, targets, store)
    head = [f"# trackrelay bench — {env.get('date', '')}", "",
            f"{env.get('machine', '')}; load average before/after: {env.get('load_before', '?')} / "
            f"{env.get('load_after', '?')}. Commit {env.get('commit', '?')}. Knobs: {env.get('knobs', '')}.",
            "Other work shares these cores: read ratios (same round, same machine state), not absolute numbers.",
            ""]
    summary = ["## Targets", "", "| what | measured | target | verdict |", "|---|---:|---|---|"]
    summary += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in targets]
    summary.append("")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text("\n".join(head + summary + body) + "\n", encoding="utf-8")
    # on the terminal the summary comes last, where the eye lands
    print("\n".join(head + body + summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
