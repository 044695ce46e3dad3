#!/usr/bin/env python3
"""One SMTP load run: smtp-source into a target, clock stopped at the sink. Stdlib only.

  smtp_run.py run   --port P --sink-log LOG --msg FILE --n N --conc C [--rcpts R]
                    [--factor K] [--timeout S] [--label k=v ...] [--out results.jsonl]
  smtp_run.py probe --port P --sink-log LOG --msg FILE [--rcpts R]

run: sends N copies of FILE with Postfix's smtp-source over C parallel sessions (a new
connection per message; REUSE=1 in the environment adds -d), R recipients per message
(-r: smtp-source numbers them 1rcpt@, 2rcpt@, ...). Two clocks start together:
  accept  stops when smtp-source has had its last reply (the target said 250 to all);
  e2e     stops when the smtp-sink has counted N*K more messages (polled every 5 ms from
          its -c counter log). K is how many upstream messages one submitted mail
          becomes: 1 for Postfix or the relay without tracking, one per tracked recipient
          with per-recipient tracking. Measure it with `probe`.
Rates are submitted mails per second. Bounded: smtp-source is killed (by PID) after
--timeout seconds, and the e2e wait gives up when the sink stalls for 20 s.
Appends one JSON object to --out and prints a summary line on stderr.

probe: sends one mail and prints how many messages reached the sink (waits until the
count has been stable for 1.5 s, at most 20 s); exit 1 if none arrived.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from still import wait_until_still

SMTP_SOURCE = os.environ.get("SMTP_SOURCE", "/usr/sbin/smtp-source")
MESG = re.compile(rb"mesg=(\d+)")
STALL = 20.0


def sink_count(log: Path) -> int:
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 400))
            hits = MESG.findall(f.read())
    except FileNotFoundError:
        return 0
    return int(hits[-1]) if hits else 0


def wait_stable(log: Path, quiet: float, limit: float) -> int:
    """Wait until the sink count has not moved for `quiet` seconds (at most `limit`)."""
    return wait_until_still(lambda: sink_count(log), quiet=quiet, limit=limit, poll=0.05)[0]


def source_cmd(a: argparse.Namespace, n: int, conc: int) -> list[str]:
    cmd = [SMTP_SOURCE, "-m", str(n), "-s", str(conc), "-F", a.msg, "-f", a.sender, "-t", a.to]
    if a.rcpts > 1:
        cmd += ["-r", str(a.rcpts)]
    if os.environ.get("REUSE") == "1":
        cmd.append("-d")
    return cmd + [f"127.0.0.1:{a.port}"]


def run(a: argparse.Namespace) -> int:
    log = Path(a.sink_log)
    base = wait_stable(log, 0.3, 30.0)  # nothing left over from the previous run
    target = base + a.n * a.factor
    err_path = Path(a.sink_log).with_name("smtp-source.err")
    with open(err_path, "wb") as err:
        t0 = time.time()
        proc = subprocess.Popen(source_cmd(a, a.n, a.conc), stdout=subprocess.DEVNULL, stderr=err)
        t_accept = t_e2e = None
        status = "ok"
        last_count, last_change = base, time.monotonic()
        while True:
            now = time.time()
            count = sink_count(log)
            if count != last_count:
                last_count, last_change = count, time.monotonic()
            if t_e2e is None and count >= target:
                t_e2e = now
            if t_accept is None and proc.poll() is not None:
                t_accept = now
            if t_accept is not None and t_e2e is not None:
                break
            if now - t0 > a.timeout:
                status = "timeout"
                break
            if t_accept is not None and time.monotonic() - last_change > STALL:
                status = "stalled"
                break
            time.sleep(0.005)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    errors = [ln for ln in err_path.read_text(errors="replace").splitlines() if ln.strip()]
    if proc.returncode not in (0, None) and status == "ok":
        status = "error"
    got = sink_count(log) - base
    t_accept = t_accept or time.time()
    res = dict(kind="smtp", **dict(kv.split("=", 1) for kv in a.label), n=a.n, conc=a.conc, rcpts=a.rcpts,
               factor=a.factor, msg_bytes=os.path.getsize(a.msg), status=status,
               accept_s=round(t_accept - t0, 3), accept_mps=round(a.n / (t_accept - t0), 1),
               e2e_s=round(t_e2e - t0, 3) if t_e2e else None,
               e2e_mps=round(a.n / (max(t_e2e, t_accept) - t0), 1) if t_e2e else None,
               sink_msgs=got, source_rc=proc.returncode, source_errors=len(errors),
               first_error=errors[0][:200] if errors else "")
    line = json.dumps(res, ensure_ascii=False)
    print(f"  {res.get('target', '?'):8} sessions={a.conc:<3} rcpts={a.rcpts} tracking={res.get('tracking', '-'):3} "
          f"accept={res['accept_mps']} e2e={res['e2e_mps']} msg/s  sink+{got} {status} {res['first_error'][:80]}",
          file=sys.stderr, flush=True)
    if a.out:
        with open(a.out, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    return 0 if status == "ok" else 1


def probe(a: argparse.Namespace) -> int:
    log = Path(a.sink_log)
    base = wait_stable(log, 0.3, 30.0)
    try:
        r = subprocess.run(source_cmd(a, 1, 1), capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        print("0")
        print("probe: smtp-source timed out", file=sys.stderr)
        return 1
    deadline = time.monotonic() + 20.0
    while sink_count(log) == base and time.monotonic() < deadline:
        time.sleep(0.05)
    got = wait_stable(log, 1.5, max(0.0, deadline - time.monotonic()) + 1.5) - base
    print(got)
    if got <= 0:
        detail = (r.stderr or b"").decode(errors="replace").strip().splitlines()
        print(f"probe: nothing reached the sink (smtp-source rc={r.returncode}"
              f"{': ' + detail[-1] if detail else ''})", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=("run", "probe"))
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sink-log", required=True)
    ap.add_argument("--msg", required=True)
    ap.add_argument("--from", dest="sender", default="news@nordlicht-outdoor.example")
    ap.add_argument("--to", default="sanna.virtanen@example.org")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--conc", type=int, default=1)
    ap.add_argument("--rcpts", type=int, default=1)
    ap.add_argument("--factor", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--label", action="append", default=[], help="key=value stored with the result")
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.n < 1 or a.conc < 1 or a.rcpts < 1 or a.factor < 1:
        ap.error("--n, --conc, --rcpts and --factor must be >= 1")
    return run(a) if a.mode == "run" else probe(a)


if __name__ == "__main__":
    sys.exit(main())
