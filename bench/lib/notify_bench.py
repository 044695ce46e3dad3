#!/usr/bin/env python3
"""Notifications under load: how long from a person's open to the webhook receiver's POST.

  notify_bench.py --smtp-port P --hits-base URL --store DB|URL --cli TRACKRELAY --conf FILE
                  --sender ADDR [--probes 40] [--dur 10s] [--conns 50] [--threads 2] [--label k=v ...]
                  --out results.jsonl

1. Sends probes+1 tracked mails through the relay (one recipient each) and waits for them.
2. wrk drives human-classified opens (a reader's X-Forwarded-For and user agent) at full
   speed on one copy: pixel requests/s with no webhook.
3. Adds a signed json webhook (events: open) pointing at a receiver started here, and runs
   wrk again while, every DUR/probes seconds, a person opens one of the other copies for the
   first time; each such open must reach the receiver. Reports the time from the open's
   request to the receiver's POST (p50, p99), notices lost, and pixel rps with notifications
   on vs off. Loopback only.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage

from aiohttp import ClientSession, web

from hits import loopback, parse_wrk, query

READER = {"X-Forwarded-For": "198.51.100.7",
          "User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Gecko/20100101 Thunderbird/115.6.0"}


def send_mails(port: int, sender: str, count: int) -> list[str]:
    recipients = [f"reader{i}@example.org" for i in range(count)]
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        for rcpt in recipients:
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = sender, rcpt, f"Proposal for {rcpt}"
            msg.set_content("plain")
            msg.add_alternative('<p>Hello</p><p><a href="https://example.com/offer">offer</a></p>', subtype="html")
            smtp.send_message(msg)
    return recipients


def copy_tokens(store: str, recipients: list[str], timeout: float = 60) -> dict[str, str]:
    """recipient -> pixel token, once every copy is delivered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = query(store, "SELECT recipient, token FROM copies WHERE delivered_at IS NOT NULL")
        found = {r: t for r, t in rows if r in recipients}
        if len(found) == len(recipients):
            return found
        time.sleep(0.2)
    sys.exit(f"only some copies were delivered within {timeout:.0f}s")


async def wrk(url: str, a: argparse.Namespace) -> dict:
    args = ["wrk", "--latency", "-t", str(a.threads), "-c", str(a.conns), "-d", a.dur]
    for name, value in READER.items():
        args += ["-H", f"{name}: {value}"]
    proc = await asyncio.create_subprocess_exec(*args, url, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), int(a.dur.rstrip("s")) + 60)
    if proc.returncode:
        raise RuntimeError(f"wrk failed: {err.decode()[-200:]}")
    return parse_wrk(out.decode())


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main(a: argparse.Namespace) -> int:
    loopback(a.hits_base)
    recipients = send_mails(a.smtp_port, a.sender, a.probes + 1)
    tokens = await asyncio.to_thread(copy_tokens, a.store, recipients)  # query() runs its own loop (PostgreSQL)
    load, probes = recipients[0], recipients[1:]
    arrived: dict[str, float] = {}

    async def hook(request: web.Request) -> web.Response:
        event = json.loads(await request.read())
        if event.get("type") == "message.opened" and event.get("recipient"):
            arrived.setdefault(event["recipient"], time.monotonic())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    res: dict = {"kind": "notify", **dict(kv.split("=", 1) for kv in a.label), "probes": a.probes, "dur": a.dur,
                 "conns": a.conns}
    try:
        pixel = f"{a.hits_base}/o/{tokens[load]}.gif"
        off = await wrk(pixel, a)  # nobody listens yet: no webhook
        added = subprocess.run([a.cli, "webhook", "add", a.sender, f"http://127.0.0.1:{port}/hook",
                                "--events", "open", "-c", a.conf], capture_output=True, text=True, timeout=60)
        if added.returncode:
            raise RuntimeError(f"webhook add failed: {added.stderr.strip()[-200:]}")
        sent: dict[str, float] = {}

        async def people() -> None:
            gap = int(a.dur.rstrip("s")) / (a.probes + 1)
            async with ClientSession() as s:
                for rcpt in probes:
                    await asyncio.sleep(gap)
                    sent[rcpt] = time.monotonic()
                    async with s.get(f"{a.hits_base}/o/{tokens[rcpt]}.gif", headers=READER) as r:
                        await r.read()

        on, _ = await asyncio.gather(wrk(pixel, a), people())
        deadline = time.monotonic() + 15
        while len(arrived) < len(sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        latencies = [arrived[r] - sent[r] for r in sent if r in arrived]
        res.update(status="ok", rps_off=off["rps"], rps_on=on["rps"],
                   rps_ratio=round(on["rps"] / off["rps"], 3) if off["rps"] and on["rps"] else None,
                   sent=len(sent), received=len(latencies), lost=len(sent) - len(latencies),
                   p50_ms=round(percentile(latencies, 50) * 1000, 1) if latencies else None,
                   p99_ms=round(percentile(latencies, 99) * 1000, 1) if latencies else None,
                   max_ms=round(max(latencies) * 1000, 1) if latencies else None)
    except Exception as e:  # reported in the results, as the other parts do
        res.update(status="error", error=str(e)[:300])
    finally:
        await runner.cleanup()
    print(f"  notify {' '.join(a.label)} pixel rps off={res.get('rps_off')} on={res.get('rps_on')} ratio={res.get('rps_ratio')} "
          f"open->receiver p50={res.get('p50_ms')}ms p99={res.get('p99_ms')}ms lost={res.get('lost')} "
          f"{res['status']} {res.get('error', '')}", file=sys.stderr, flush=True)
    with open(a.out, "a", encoding="utf-8") as f:
        f.write(json.dumps(res) + "\n")
    return 0 if res["status"] == "ok" else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("--hits-base", "--store", "--cli", "--conf", "--sender", "--out"):
        ap.add_argument(name, required=True)
    ap.add_argument("--smtp-port", type=int, required=True)
    ap.add_argument("--probes", type=int, default=40)
    ap.add_argument("--dur", default="10s")
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--label", action="append", default=[])
    args = ap.parse_args()
    if not re.fullmatch(r"\d+s", args.dur):
        sys.exit("--dur: seconds, e.g. 10s")
    sys.exit(asyncio.run(main(args)))
