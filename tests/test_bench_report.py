"""bench/lib/report.py: PostgreSQL beside SQLite is a per-round ratio of the two relays, and
each store's relay is compared with its own Postfix run of the same round."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench" / "lib"))

import report  # noqa: E402  (bench/lib is scripts, not a package)


def smtp(store: str, target: str, rep: int, e2e: float, block: str = "on", rcpts: int = 1) -> dict:
    return {"kind": "smtp", "store": store, "target": target, "rep": rep, "block": block, "conc": 20,
            "rcpts": rcpts, "tracking": "on" if target == "relay" else "-", "e2e_mps": e2e, "accept_mps": e2e,
            "status": "ok", "n": 1000, "msg_bytes": 20580}


def test_postgresql_beside_sqlite_is_the_median_of_per_round_ratios():
    rows = [smtp("sqlite", "postfix", 1, 500), smtp("sqlite", "relay", 1, 400),
            smtp("postgresql", "postfix", 1, 250), smtp("postgresql", "relay", 1, 200),
            smtp("sqlite", "postfix", 2, 500), smtp("sqlite", "relay", 2, 300),
            smtp("postgresql", "postfix", 2, 500), smtp("postgresql", "relay", 2, 270),
            smtp("sqlite", "postfix", 3, 500), smtp("sqlite", "relay", 3, 200),
            smtp("postgresql", "postfix", 3, 500), smtp("postgresql", "relay", 3, 190)]
    targets: list[tuple[str, str, str, str]] = []
    text = "\n".join(report.smtp_section(rows, {}, targets, "sqlite"))
    by_name = {name: (value, verdict) for name, value, _, verdict in targets}
    # rounds: 200/400 = 0.5, 270/300 = 0.9, 190/200 = 0.95 -> median 0.9
    assert by_name["PostgreSQL / SQLite, SMTP tracking on, 1 rcpt/mail, 20 session(s)"] == ("0.90", "PASS")
    assert "| on | 20 | 1 | 0.90 | 0.50, 0.90, 0.95 |" in text
    # each relay against its own store's Postfix run: PostgreSQL 0.8, 0.54, 0.38 -> 0.54
    assert by_name["PostgreSQL: SMTP relay (tracking on) / Postfix, 1 rcpt/mail, 20 sessions"] == ("0.54", "FAIL")
    assert by_name["SQLite: SMTP relay (tracking on) / Postfix, 1 rcpt/mail, 20 sessions"] == ("0.60", "PASS")


def test_one_store_has_no_engine_comparison_and_old_results_count_as_the_run_s_store():
    rows = [{**smtp("-", "postfix", 1, 500), "store": None}, {**smtp("-", "relay", 1, 400), "store": None}]
    for r in rows:
        del r["store"]
    targets: list[tuple[str, str, str, str]] = []
    text = "\n".join(report.smtp_section(rows, {}, targets, "sqlite"))
    assert "1c." not in text
    assert [t[0] for t in targets if "/ Postfix, 1 rcpt" in t[0]] == [
        "SQLite: SMTP relay (tracking on) / Postfix, 1 rcpt/mail, 20 sessions"]
