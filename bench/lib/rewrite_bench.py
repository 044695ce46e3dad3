#!/usr/bin/env python3
"""Per-message tracking rewrite cost beside a bare lxml.html parse of the same HTML.

  .venv/bin/python bench/lib/rewrite_bench.py --data DIR [--runs 300] [--out results.jsonl]

For each input message (newsletter.eml, digest.eml, digest-attach.eml in DIR, with CRLF
line ends as the relay receives them) it times, after 10 untimed warm-up calls, RUNS
calls per case interleaved in rounds of 5 calls per case (the VM's CPU speed drifts):

  rewrite   relay.rewrite.rewrite_message(raw, plan): the relay's whole per-copy job on
            the raw message (find the HTML parts, decode, rewrite links, add the pixel,
            re-encode, splice back), with opens and clicks on
  lxml      lxml.html.document_fromstring(html) + lxml.html.tostring(): the cheapest
            "real parser" round trip of the message's HTML part(s), bytes as decoded from
            their transfer encoding (the reference the target is expressed against)
  html      (information) relay.rewrite_html.rewrite_html on the decoded HTML alone,
            if that module exists: the HTML work without the MIME layer
  calib     a fixed pure-Python loop: its spread shows how noisy the machine was

Each call is timed twice: CPU time of this thread (time.thread_time_ns) and wall time.
The CPU time is what the verdict uses: on a machine shared with other work, the
scheduler takes the CPU away in slices of milliseconds, which stretches the wall time of
a 10 ms call far more often than that of a 2 ms call and so inflates the wall-time
ratio; the thread's own CPU time does not count those pauses. Reports median / p90 per
case and the ratio rewrite/lxml (target <= 2.0), taken per round (median(rewrite) /
median(lxml) of the same round, then the median over rounds), so slow and fast phases of
the CPU hit both sides of every quotient alike. The wall-time ratio is kept beside it.
Also checks the rewrite did its job (links rewritten, pixel inserted, not skipped), so a
no-op is never timed.
"""
from __future__ import annotations

import argparse
import email
import json
import secrets
import statistics
import sys
import time
from dataclasses import replace
from email.policy import compat32
from pathlib import Path

FILES = ("newsletter.eml", "digest.eml", "digest-attach.eml")
BASE = "http://127.0.0.1:8080"
TOKEN = "bench-token-0123456789abcdef"
BLOCK = 5  # calls per case per round; rounds rotate which case goes first


def html_parts(raw: bytes) -> list[bytes]:
    msg = email.message_from_bytes(raw, policy=compat32)
    return [p.get_payload(decode=True) for p in msg.walk() if p.get_content_type() == "text/html"]


def calibrate() -> int:
    x = 0
    for i in range(20000):
        x += i
    return x


def timed(cases: dict, runs: int, block: int = BLOCK, warmup: int = 10) -> dict[str, dict[str, list[int]]]:
    """{case: {"cpu": [ns], "wall": [ns]}}. CPU time is this thread's own (CLOCK_THREAD_CPUTIME_ID):
    time the scheduler gives to other processes is not counted, so a busy machine stretches
    the wall times of long calls far more than of short ones, but not their CPU times."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    samples = {name: {"cpu": [], "wall": []} for name in cases}
    names = list(cases)
    for r in range(max(1, runs // block)):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
        for name in order:
            fn, cpu, wall = cases[name], samples[name]["cpu"], samples[name]["wall"]
            for _ in range(block):
                t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
                fn()
                c1, t1 = time.thread_time_ns(), time.perf_counter_ns()
                cpu.append(c1 - c0)
                wall.append(t1 - t0)
    return samples


def paired_ratio(a: list[int], b: list[int], block: int = BLOCK) -> float:
    """Median over rounds of median(a in round) / median(b in round): both sides of each
    quotient ran within milliseconds of each other, so CPU-speed phases cancel out."""
    rounds = min(len(a), len(b)) // block
    qs = [statistics.median(a[i * block:(i + 1) * block]) / statistics.median(b[i * block:(i + 1) * block])
          for i in range(rounds)]
    return statistics.median(qs)


def stats(sample: dict[str, list[int]]) -> dict:
    c, w = sorted(sample["cpu"]), sorted(sample["wall"])
    return {"median_ms": round(statistics.median(c) / 1e6, 4), "p90_ms": round(c[int(len(c) * 0.9) - 1] / 1e6, 4),
            "min_ms": round(c[0] / 1e6, 4), "wall_median_ms": round(statistics.median(w) / 1e6, 4),
            "wall_p90_ms": round(w[int(len(w) * 0.9) - 1] / 1e6, 4), "runs": len(c)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--out")
    a = ap.parse_args()

    import lxml.html

    def lxml_roundtrip(parts: list[bytes]):
        return [lxml.html.tostring(lxml.html.document_fromstring(h)) for h in parts]

    try:
        from relay.rewrite import RewritePlan, rewrite_message
        unavailable = ""
    except Exception as e:  # being written: report, do not fail the whole bench
        rewrite_message = RewritePlan = None
        unavailable = f"relay.rewrite not importable ({type(e).__name__}: {e})"
    try:
        from relay.rewrite import rewrite_copies as copies
    except Exception:
        copies = None
    try:
        from relay import rewrite_html as rh
    except Exception:
        rh = None

    plan = None
    if RewritePlan is not None:
        plan = RewritePlan(opens=True, clicks=True, pixel_url=f"{BASE}/o/{TOKEN}.gif",
                           click_base=f"{BASE}/c/{TOKEN}/", own_prefix=BASE)
    html_plan = None
    if rh is not None and hasattr(rh, "RewritePlan") and hasattr(rh, "rewrite_html"):
        try:
            html_plan = rh.RewritePlan(opens=True, clicks=True, pixel_url=f"{BASE}/o/{TOKEN}.gif",
                                       click_base=f"{BASE}/c/{TOKEN}/", own_prefix=BASE)
        except Exception:
            html_plan = None

    out = []
    for name in FILES:
        path = Path(a.data) / name
        # as the relay gets it off the wire: smtp-source sends the LF file with CRLF
        raw = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        parts = html_parts(raw)
        texts = [p.decode("utf-8") for p in parts]
        cases = {"calib": calibrate, "lxml": lambda: lxml_roundtrip(parts)}
        res = {"kind": "rewrite", "file": name, "bytes": len(raw), "html_bytes": sum(map(len, parts))}
        if rewrite_message is not None:
            try:
                check = rewrite_message(raw, plan)
                res.update(links=len(check.links), pixel=bool(check.pixel), skipped=check.skipped or "",
                           out_bytes=len(check.data))
                cases["rewrite"] = lambda: rewrite_message(raw, plan)
            except Exception as e:
                res["error"] = f"rewrite_message raised {type(e).__name__}: {e}"
        else:
            res["error"] = unavailable
        if copies is not None and plan is not None:
            # a mail to three recipients: three new tokens, one rewrite (relay.rewrite.rewrite_copies);
            # new on every call as in delivery, so nothing cached per token helps here
            def copies3(raw=raw, plan=plan):
                plans = [replace(plan, token=t, pixel_url=f"{BASE}/o/{t}.gif", click_base=f"{BASE}/c/{t}/")
                         for t in (secrets.token_urlsafe(18) for _ in range(3))]
                return copies(raw, plans)
            cases["copies3"] = copies3
        if html_plan is not None:
            try:
                rh.rewrite_html(texts[0], html_plan)
                cases["html"] = lambda: [rh.rewrite_html(t, html_plan) for t in texts]
            except Exception:
                pass
        samples = timed(cases, a.runs)
        for case, sample in samples.items():
            res[case] = stats(sample)
        if "rewrite" in res:
            res["ratio"] = round(paired_ratio(samples["rewrite"]["cpu"], samples["lxml"]["cpu"]), 3)
            res["wall_ratio"] = round(paired_ratio(samples["rewrite"]["wall"], samples["lxml"]["wall"]), 3)
            ok = res["links"] > 0 and res["pixel"] and not res["skipped"]
            res["status"] = "ok" if ok else "no-op"
        else:
            res["status"] = "unavailable"
        out.append(res)
        line = json.dumps(res, ensure_ascii=False)
        print(line, flush=True)
        if a.out:
            with open(a.out, "a", encoding="utf-8") as f:
                f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
