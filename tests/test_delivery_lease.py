"""relay.delivery: a delivery that outlasts its lease keeps its claim (the lease is renewed).

Two real delivery workers on one SQLite store and a real aiosmtpd upstream that holds
the first mail's DATA until the test lets it go.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace

from aiosmtpd.smtp import SMTP, Envelope, Session

from conftest import Sink
from hits_helpers import wait_until
from relay.config import parse_upstream_url
from relay.delivery import DeliverySettings, DeliveryWorker
from relay.records import NewMessage, NewRecipient
from relay.store.sqlite import SqliteStore
from relay.upstream import SmtpUpstream

LEASE = 1.0


@dataclass
class SlowSink(Sink):
    """Holds DATA of any mail with b"SLOW" in it until `go` is set."""

    go: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if b"SLOW" in envelope.original_content:
            await self.go.wait()
        return await super().handle_DATA(server, session, envelope)


def mail(subject: str) -> NewMessage:
    return NewMessage(
        queue_id=subject, user_id=None, mail_from="alice@example.com", message_id=f"<{subject}@x>",
        subject=subject, body=f"Subject: {subject}\r\n\r\n{subject}\r\n".encode(), received_at=time.time(),
        client_ip="192.0.2.7", recipients=(NewRecipient("bob@example.org", None),),
    )


async def test_a_delivery_longer_than_its_lease_is_not_claimed_by_another_worker(store):
    sink = SlowSink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(sink, loop=loop), "127.0.0.1", 0)
    sink.port = server.sockets[0].getsockname()[1]
    settings = DeliverySettings(retry_intervals=(60.0,), max_age=86400.0, workers=1, public_url="http://t.example",
                                hostname="relay.test", lease=LEASE, poll=0.05)
    target = parse_upstream_url(f"smtp://127.0.0.1:{sink.port}")
    first = DeliveryWorker(store, SmtpUpstream(target, timeout=30), settings, name="first")
    second = DeliveryWorker(store, SmtpUpstream(target, timeout=30), replace(settings, workers=2), name="second")
    slow = await store.spool(mail("SLOW"))
    runs = [asyncio.create_task(first.run())]
    try:
        await wait_until(lambda: first._tasks)  # the first worker has the slow mail, and is sending it
        claimed_until = (await store.message_row(slow))["locked_until"]
        runs.append(asyncio.create_task(second.run()))
        # well past the first lease, and renewed meanwhile
        await wait_until(lambda: time.time() > claimed_until + LEASE)
        row = await store.message_row(slow)
        assert row["locked_by"] == "first" and row["locked_until"] > claimed_until
        # mail spooled now is claimed by the second worker together with any mail it may take:
        # once it is delivered, the second worker has looked for due mail after the lease ran out
        await store.spool(mail("LATER"))
        second.wake()
        [later] = await sink.wait_for(1)
        assert b"LATER" in later.data
        sink.go.set()
        await wait_until(lambda: has_status(store, slow, "sent"))
        assert sorted(m.data.split(b"\r\n\r\n")[1].strip() for m in sink.messages) == [b"LATER", b"SLOW"]
        assert first.counts["sent"] == 1 and second.counts["sent"] == 1
    finally:
        sink.go.set()
        await asyncio.gather(first.stop(), second.stop())
        for run in runs:
            await run
        server.close()


async def has_status(store: SqliteStore, message_id: int, status: str) -> bool:
    return (await store.message_row(message_id))["status"] == status
