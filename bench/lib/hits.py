#!/usr/bin/env python3
"""Hits-server helpers: find a real token, check the endpoints, and one bounded wrk run.

  hits.py token --db RELAY.db|postgresql://... [--timeout 30]
      wait for a delivered tracked copy; print "TOKEN POSITION" (POSITION: its first
      rewritten link, from the links table: one row per message, its URLs a list)
  hits.py check --base http://127.0.0.1:PORT --token T --pos N --gif-out FILE
      GET /o/T.gif must give 200 image/gif (its bytes go to FILE) and GET /c/T/N a 302;
      prints the Location; exit 1 with the reason otherwise
  hits.py run --url URL --label k=v ... [--db RELAY.db] [--dur 10s] [--conns 50]
              [--threads 2] [--warmup 1] [--out results.jsonl]
      wrk --latency against URL (loopback only, wrapped in a hard timeout), after an
      untimed warm-up. With --db: waits for the event count to settle before and after,
      and reports events stored during the run vs requests wrk completed.

Events are counted as rows of the relay's SQLite `events` table (opened read-only).
wrk counts only requests whose response arrived before its clock stopped; up to one
in-flight request per connection may still reach the server afterwards, so "stored"
may exceed "requests" by at most --conns. lost = requests - stored when positive.
"""
from __future__ import annotations

import argparse
import http.client
import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from still import wait_until_still

SETTLE_QUIET = 2.0  # seconds without a new event row = the writer has caught up
SETTLE_LIMIT = 30.0


def query(db: str, sql: str) -> list[tuple]:
    """A read on the relay's store: a SQLite file, or a postgresql:// URL (STORE=postgresql)."""
    if db.startswith(("postgresql://", "postgres://")):
        import asyncio

        import asyncpg

        async def fetch() -> list[tuple]:
            conn = await asyncpg.connect(db, timeout=10)
            try:
                return [tuple(r) for r in await conn.fetch(sql)]
            finally:
                await conn.close()

        return asyncio.run(fetch())
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def events(db: str) -> int:
    return query(db, "SELECT COUNT(*) FROM events")[0][0]


def settle(db: str) -> tuple[int, float]:
    """Poll until the events count stops moving; (count, seconds waited)."""
    return wait_until_still(lambda: events(db), quiet=SETTLE_QUIET, limit=SETTLE_LIMIT, poll=0.2)


def loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"refusing a non-loopback URL: {url}")


def cmd_token(a: argparse.Namespace) -> int:
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        try:
            rows = query(a.db, "SELECT c.token, l.urls FROM copies c JOIN links l ON l.message_id = c.message_id"
                               " WHERE c.opens AND c.clicks ORDER BY c.id DESC LIMIT 1")
            # SQLite keeps the list as JSON text, PostgreSQL as an array
            urls = rows and (json.loads(rows[0][1]) if isinstance(rows[0][1], str) else rows[0][1])
            position = next((i for i, url in enumerate(urls or ()) if url is not None), None)
            if position is not None:
                print(rows[0][0], position)
                return 0
        except Exception:  # not there yet (sqlite3 or asyncpg): try again until the deadline
            pass
        time.sleep(0.2)
    print("no tracked copy with saved links in the store", file=sys.stderr)
    return 1


def get(url: str) -> tuple[int, dict, bytes]:
    u = urlsplit(url)
    con = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    try:
        con.request("GET", u.path, headers={"User-Agent": "trackrelay-bench/1"})
        r = con.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        con.close()


def cmd_check(a: argparse.Namespace) -> int:
    loopback(a.base)
    try:
        status, headers, body = get(f"{a.base}/o/{a.token}.gif")
        if status != 200 or not headers.get("content-type", "").startswith("image/gif") or not body.startswith(b"GIF"):
            print(f"pixel: GET /o/<token>.gif gave {status} {headers.get('content-type', '')}", file=sys.stderr)
            return 1
        Path(a.gif_out).write_bytes(body)
        status, headers, _ = get(f"{a.base}/c/{a.token}/{a.pos}")
        if status != 302 or not headers.get("location"):
            print(f"click: GET /c/<token>/{a.pos} gave {status}", file=sys.stderr)
            return 1
    except OSError as e:
        print(f"hits server not answering: {e}", file=sys.stderr)
        return 1
    print(headers["location"])
    return 0


def ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]


def parse_wrk(text: str) -> dict:
    def lat(p: str) -> float | None:
        m = re.search(rf"^\s*{p}%\s+(\S+)", text, re.M)
        return round(ms(m.group(1)), 2) if m else None
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "rps": float(rps.group(1)) if rps else None,
        "requests": int(total.group(1)) if total else None,
        "p50_ms": lat("50"), "p90_ms": lat("90"), "p99_ms": lat("99"),
        "non_2xx_3xx": int(non.group(1)) if non else 0,
        "socket_errors": sum(map(int, sock.groups())) if sock else 0,
    }


def wrk(url: str, threads: int, conns: int, dur: str, latency: bool) -> str:
    seconds = float(re.sub(r"[a-z]+$", "", dur)) * (60 if dur.endswith("m") else 1)
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", dur, "--timeout", "5s"]
    if latency:
        cmd.append("--latency")
    r = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 30)
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stderr.strip()[:200]}")
    return r.stdout


def cmd_run(a: argparse.Namespace) -> int:
    loopback(a.url)
    if not re.fullmatch(r"\d+(\.\d+)?[sm]?", a.dur):
        sys.exit(f"bad --dur {a.dur!r} (e.g. 10s)")
    dur = a.dur if a.dur[-1] in "sm" else a.dur + "s"
    res: dict = {"kind": "hits", **dict(kv.split("=", 1) for kv in a.label), "url": a.url, "dur": dur,
                 "conns": a.conns, "threads": a.threads}
    try:
        if a.warmup > 0:
            wrk(a.url, a.threads, a.conns, f"{a.warmup}s", latency=False)
        before = settle(a.db)[0] if a.db else None
        text = wrk(a.url, a.threads, a.conns, dur, latency=True)
        if a.raw_dir:
            name = f"wrk-{res.get('target', 'x')}-{res.get('endpoint', 'x')}-{res.get('rep', 0)}.txt"
            Path(a.raw_dir, name).write_text(text)
        res.update(parse_wrk(text))
        if a.db:
            after, waited = settle(a.db)
            stored = after - before
            res.update(stored=stored, settle_s=waited,
                       lost=max(0, (res["requests"] or 0) - stored))
        res["status"] = "ok"
    except Exception as e:  # wrk, a timeout, or the store: reported in the results, not raised
        res.update(status="error", error=str(e)[:300])
    line = json.dumps(res)
    print(f"  {res.get('target', '?'):6} {res.get('endpoint', '?'):6} rps={res.get('rps')} p99={res.get('p99_ms')}ms "
          f"requests={res.get('requests')} stored={res.get('stored', '-')} lost={res.get('lost', '-')} "
          f"{res['status']} {res.get('error', '')[:100]}", file=sys.stderr, flush=True)
    if a.out:
        with open(a.out, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    return 0 if res["status"] == "ok" else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("token")
    t.add_argument("--db", required=True)
    t.add_argument("--timeout", type=float, default=30)
    c = sub.add_parser("check")
    c.add_argument("--base", required=True)
    c.add_argument("--token", required=True)
    c.add_argument("--pos", required=True)
    c.add_argument("--gif-out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--url", required=True)
    r.add_argument("--db")
    r.add_argument("--dur", default="10s")
    r.add_argument("--conns", type=int, default=50)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--warmup", type=float, default=1)
    r.add_argument("--label", action="append", default=[])
    r.add_argument("--raw-dir")
    r.add_argument("--out")
    a = ap.parse_args()
    return {"token": cmd_token, "check": cmd_check, "run": cmd_run}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
