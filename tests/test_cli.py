"""The trackrelay command against a real store file: users, tokens, policy, privacy lists."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

TRACKRELAY = str(Path(sys.executable).parent / "trackrelay")


@pytest.fixture
def run(tmp_path):
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    base["TRACKRELAY_STORE_URL"] = f"sqlite:///{tmp_path}/cli.db"

    def run(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([TRACKRELAY, *args], env={**base, **(env or {})}, input=stdin, capture_output=True,
                              text=True, timeout=60)

    return run


def test_users(run):
    out = run("user", "add", "Alice@Example.com", "--admin", "--password-stdin", stdin="long enough pw\n")
    assert out.returncode == 0 and out.stdout.strip() == "added alice@example.com (admin)"
    assert run("user", "add", "alice@example.com", "--password-stdin", stdin="long enough pw\n").returncode == 2
    short = run("user", "add", "bob@example.com", "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "at least 8" in short.stderr
    assert run("user", "add", "bob@example.com", "--password-stdin", stdin="another long pw\n").returncode == 0
    assert run("user", "list").stdout.split("\n")[:2] == ["alice@example.com  admin", "bob@example.com"]
    assert run("user", "passwd", "bob@example.com", "--password-stdin", stdin="new long password\n").returncode == 0
    assert run("user", "del", "bob@example.com").returncode == 0
    gone = run("user", "del", "bob@example.com")
    assert gone.returncode == 2 and gone.stderr.strip() == "trackrelay: no such user: bob@example.com"


def test_token_and_policy(run):
    run("user", "add", "alice@example.com", "--password-stdin", stdin="long enough pw\n")
    token = run("token", "create", "alice@example.com").stdout.strip()
    assert token.startswith("trk_") and len(token) > 40
    assert run("token", "create", "nobody@example.com").returncode == 2
    out = run("policy", "set", "alice@example.com", "mode=always", "clicks=false")
    assert out.returncode == 0 and "mode = always" in out.stdout and "clicks = False" in out.stdout
    bad = run("policy", "set", "alice@example.com", "mode=sometimes")
    assert bad.returncode == 2 and bad.stderr.startswith("trackrelay: ") and len(bad.stderr.splitlines()) == 1


def test_privacy_lists(run):
    assert run("dnt", "add", "Bob@Example.org").stdout.strip() == "dnt: added bob@example.org"
    assert run("dnt", "add", "@secret.example").returncode == 0
    assert run("dnt", "add", "not an address").returncode == 2
    listed = [line.split("\t") for line in run("dnt", "list").stdout.splitlines()]
    assert [(row[0], row[2], row[3]) for row in listed] == [("@secret.example", "cli", "-"), ("bob@example.org", "cli", "-")]
    assert run("dnt", "del", "bob@example.org").returncode == 0
    assert run("dnt", "del", "bob@example.org").returncode == 2
    assert run("consent", "add", "@example.org").returncode == 2
    assert run("consent", "add", "carol@example.org").returncode == 0
    assert [line.split("\t")[0] for line in run("consent", "list").stdout.splitlines()] == ["carol@example.org"]


@pytest.mark.parametrize("part", ["smtp", "delivery"])
def test_passthrough_refuses_smtp_and_delivery_in_separate_processes(run, part):
    # delivery would wait forever for passwords that only the SMTP process has seen
    out = run("serve", "--only", part, env={"TRACKRELAY_UPSTREAM_AUTH": "passthrough"})
    assert out.returncode == 2
    assert out.stderr.strip() == ('trackrelay: upstream.auth = "passthrough" needs smtp and delivery in one '
                                  "process: run serve without --only smtp|delivery")



def test_webhooks(run):
    run("user", "add", "alice@example.com", "--password-stdin", stdin="long enough pw\n")
    refused = run("webhook", "add", "alice@example.com", "http://127.0.0.1:9/hook")
    assert refused.returncode == 2 and refused.stderr.startswith("trackrelay: url: 127.0.0.1: 127.0.0.1 is a loopback")
    private = {"TRACKRELAY_NOTIFY_ALLOW_PRIVATE_TARGETS": "true"}
    added = run("webhook", "add", "alice@example.com", "http://127.0.0.1:9/hook", "--events", "open",
                "--digest", "15m", env=private)
    assert added.returncode == 0 and " secret: whsec_" in added.stdout
    hook_id = added.stdout.split()[2]
    chat = run("webhook", "add", "alice@example.com", "http://127.0.0.1:9/slack", "--kind", "slack", env=private)
    assert chat.returncode == 0 and "secret" not in chat.stdout
    assert run("webhook", "add", "alice@example.com", "http://127.0.0.1:9/", "--events", "reads",
               env=private).stderr.startswith("trackrelay: events:")
    listed = run("webhook", "list", "alice@example.com").stdout.splitlines()
    assert listed[0] == f"{hook_id}  alice@example.com  json  http://127.0.0.1:9/hook  events=open humans_only=True " \
                        "first_only=True digest=15m"
    tested = run("webhook", "test", hook_id)  # without allow_private_targets the sample is refused, as in serve
    assert tested.returncode == 1 and tested.stdout.startswith("failed: status None") and "loopback" in tested.stdout
    assert run("webhook", "del", hook_id).returncode == 0
    assert run("webhook", "del", hook_id).stderr.strip() == f"trackrelay: no such webhook: {hook_id}"
    assert len(run("webhook", "list").stdout.splitlines()) == 1


def test_only_is_repeatable_and_runs_just_those_parts(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    env.update(TRACKRELAY_STORE_URL=f"sqlite:///{tmp_path}/cli.db", TRACKRELAY_SMTP_LISTEN="127.0.0.1:0",
               TRACKRELAY_HTTP_LISTEN="127.0.0.1:0", TRACKRELAY_ADMIN_LISTEN="127.0.0.1:0",
               TRACKRELAY_LOG_LEVEL="INFO")
    proc = subprocess.Popen([TRACKRELAY, "serve", "--only", "smtp", "--only", "hits", "--only", "smtp"],
                            env=env, cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stderr:  # the log; "trackrelay running" comes after every listener is up
            lines.append(line)
            if "trackrelay running" in line:
                break
        log = "".join(lines)
        assert "trackrelay running (smtp, hits)" in log, log
        ports = dict(re.findall(r"(\w+) listening on 127\.0\.0\.1:(\d+)", log))
        assert set(ports) == {"smtp", "hits"}  # no admin listener, no first admin printed
        with socket.create_connection(("127.0.0.1", int(ports["smtp"])), timeout=10) as smtp:
            assert smtp.recv(100).startswith(b"220 ")
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['hits']}/healthz", timeout=10) as health:
            assert health.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "first admin" not in out


def test_consent_import_purge_and_a_users_erasure(run, tmp_path):
    rows = tmp_path / "consent.csv"
    rows.write_text("address,date,source\ncarol@example.org,2025-03-01,web form\nbroken,2025-01-01\n")
    first = run("consent", "import", str(rows))
    assert first.returncode == 1 and first.stdout.strip() == "2 lines: 1 added, 0 already recorded, 1 rejected"
    assert first.stderr.strip() == "consent.csv:3: not an address: 'broken'"
    again = run("consent", "import", str(rows), "--json")  # idempotent
    assert '"added": 0' in again.stdout and '"already": 1' in again.stdout
    listed = run("consent", "list").stdout.strip().split("\t")
    assert listed[0] == "carol@example.org" and listed[2] == "import:consent.csv (web form)"
    assert listed[4] == "given 2025-03-01T00:00:00Z"
    assert run("purge", "--dry-run").stdout.startswith("would remove nothing from before ")
    off = run("purge", env={"TRACKRELAY_PRIVACY_RETENTION_DAYS": "0"})
    assert off.returncode == 2 and "kept forever" in off.stderr
    run("user", "add", "alice@example.com", "--password-stdin", stdin="long enough pw\n")
    assert run("user", "del", "alice@example.com", "--erase").stdout.strip() == (
        "deleted alice@example.com, 0 messages erased")
    erased = run("erase", "Bob@Example.org")
    assert erased.stdout.strip() == "erased bob@example.org: nothing; on the do-not-track list (as a digest)"
    assert run("dnt", "list").stdout.split("\t")[0].endswith("(an erased address)")
    assert run("erase", "@example.org").returncode == 2
