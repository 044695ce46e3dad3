"""A restart retries at once only the mail a dead worker had in flight; deferred mail keeps its time."""
from __future__ import annotations

import socket
import subprocess
import time

from conftest import add_user, make_config
from relay.records import NewMessage, NewRecipient
from relay.store.sqlite import SqliteStore
from test_smtp_relay import send, simple_mail, wait_status


def dead_worker_name() -> str:
    """A worker on this host whose process has exited, as a crash leaves it."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return f"{socket.gethostname()}:{proc.pid}"


async def claim_as_a_dead_worker(path: str) -> int:
    store = SqliteStore(path)
    await store.open()
    try:
        now = time.time()
        message_id = await store.spool(NewMessage(
            queue_id="INFLIGHT1", user_id=None, mail_from="alice@example.com", message_id="<inflight@example.com>",
            subject="in flight", body=simple_mail(subject="in flight"), received_at=now, client_ip="",
            recipients=(NewRecipient("bob@example.org", None),)))
        [claimed] = await store.claim(dead_worker_name(), now, 10, 600)
        assert claimed.id == message_id
        return message_id
    finally:
        await store.close()


async def test_a_restart_retries_mail_in_flight_at_once_and_deferred_mail_on_its_schedule(sink, start_app,
                                                                                         tmp_path):
    cfg = make_config(tmp_path, f"smtp://127.0.0.1:{sink.port}", delivery_retry_intervals="1h")
    first = await start_app(cfg)
    await add_user(first)
    sink.replies = ["451 4.3.0 try later"]
    await send(first.port("smtp"), simple_mail(subject="deferred"))
    deferred = await wait_status(first, 1, "deferred")
    assert deferred["next_attempt_at"] > time.time() + 3000
    await first.stop()

    in_flight = await claim_as_a_dead_worker(f"{tmp_path}/relay.db")
    for start in (1, 2):  # each start (a restart, or one more delivery process) runs recovery
        app = await start_app(cfg)
        await wait_status(app, in_flight, "sent")
        await send(app.port("smtp"), simple_mail(subject="fresh"))
        await wait_status(app, in_flight + start, "sent")  # delivered after recovery ran
        row = await app.store.message_row(1)
        assert row["status"] == "deferred" and row["next_attempt_at"] == deferred["next_attempt_at"]
        await app.stop()
    assert len(sink.messages) == 3 and not any(b"Subject: deferred" in m.data for m in sink.messages)
