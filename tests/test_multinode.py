"""Nodes on one PostgreSQL: delivery nodes share the queue and one killed mid-run loses no mail;
every role twice, started together on an empty database, migrates it once and counts everything."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import asyncpg

from aiosmtpd.smtp import SMTP, Envelope, Session

from conftest import PASSWORD, Sink
from hits_helpers import wait_until
from relay.records import NewMessage, NewRecipient
from relay.store.pg_schema import MIGRATIONS as PG_MIGRATIONS
from relay.store.postgres import PostgresStore
from test_smtp_relay import send as smtp_send
from test_tracking_e2e import html_mail

TRACKRELAY = str(Path(sys.executable).parent / "trackrelay")
MAILS = 60
WORKERS = 4  # delivery.workers: the most mail one node has in flight


class SlowSink(Sink):
    """An upstream taking `delay` per mail, so a node is killed with mail in flight."""

    def __init__(self, delay: float = 0.05) -> None:
        super().__init__()
        self.delay = delay

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


async def start_node(store_url: str, sink_port: int) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    env.update(TRACKRELAY_STORE_URL=store_url, TRACKRELAY_UPSTREAM_URL=f"smtp://127.0.0.1:{sink_port}",
               TRACKRELAY_DELIVERY_WORKERS=str(WORKERS), TRACKRELAY_TRACKING_REWRITE_PROCESSES="0",
               TRACKRELAY_SMTP_LISTEN="127.0.0.1:0", TRACKRELAY_HTTP_LISTEN="127.0.0.1:0",
               TRACKRELAY_ADMIN_LISTEN="127.0.0.1:0", TRACKRELAY_SMTP_HOSTNAME="relay.test")
    return await asyncio.create_subprocess_exec(TRACKRELAY, "serve", "--only", "delivery", env=env,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


def mail(n: int) -> NewMessage:
    return NewMessage(queue_id=f"Q{n}", user_id=None, mail_from="alice@example.com", message_id=f"<m{n}@x>",
                      subject=f"mail {n}", body=f"Subject: mail {n}\r\n\r\nhello\r\n".encode(),
                      received_at=time.time(), client_ip="", recipients=(NewRecipient("bob@example.org", None),))


async def test_two_delivery_nodes_one_killed_mid_run_every_mail_arrives(pg_url):
    sink = SlowSink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(sink, loop=loop), "127.0.0.1", 0)
    sink.port = server.sockets[0].getsockname()[1]
    store = PostgresStore(pg_url)
    await store.open()
    nodes = []
    try:
        for n in range(MAILS):
            await store.spool(mail(n))
        nodes = [await start_node(pg_url, sink.port) for _ in range(2)]
        victim = f"{socket.gethostname()}:{nodes[0].pid}"

        async def victim_has_mail_in_flight() -> bool:
            return victim in await store.lock_holders() and len(sink.messages) >= 5

        await wait_until(victim_has_mail_in_flight, timeout=30)
        nodes[0].send_signal(signal.SIGKILL)
        await nodes[0].wait()
        nodes.append(await start_node(pg_url, sink.port))  # the node comes back: it takes back the dead one's claims

        async def all_sent() -> bool:
            return (await store.queue_counts()).get("sent") == MAILS

        await wait_until(all_sent, timeout=60)
        subjects = [m.data.split(b"\r\n", 1)[0] for m in sink.messages]
        assert {s for s in subjects} == {f"Subject: mail {n}".encode() for n in range(MAILS)}  # none lost
        # at most the mail the killed node had handed upstream without recording it
        assert len(subjects) - MAILS <= WORKERS
        assert await store.lock_holders() == set()
    finally:
        for node in nodes:
            if node.returncode is None:
                node.send_signal(signal.SIGTERM)
                await node.wait()
        await store.close()
        server.close()


class Node:
    """One `trackrelay serve --only ...` process; its log goes to a file the test reads for its ports."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc, self.log = proc, log

    async def ports(self, timeout: float = 60) -> dict[str, int]:
        async def running() -> bool:
            if self.proc.returncode is not None:
                raise AssertionError(f"node exited {self.proc.returncode}: {self.log.read_text()}")
            return "trackrelay running" in self.log.read_text()

        await wait_until(running, timeout=timeout)
        return {name: int(port) for name, port in re.findall(r"(\w+) listening on 127\.0\.0\.1:(\d+)",
                                                             self.log.read_text())}

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await self.proc.wait()


async def start_role(tmp_path: Path, name: str, store_url: str, sink_port: int, *parts: str) -> Node:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    env.update(TRACKRELAY_STORE_URL=store_url, TRACKRELAY_UPSTREAM_URL=f"smtp://127.0.0.1:{sink_port}",
               TRACKRELAY_DELIVERY_WORKERS=str(WORKERS), TRACKRELAY_TRACKING_REWRITE_PROCESSES="0",
               TRACKRELAY_SMTP_LISTEN="127.0.0.1:0", TRACKRELAY_HTTP_LISTEN="127.0.0.1:0",
               TRACKRELAY_ADMIN_LISTEN="127.0.0.1:0", TRACKRELAY_SMTP_HOSTNAME="relay.test",
               TRACKRELAY_TRACKING_DEFAULT_MODE="always", TRACKRELAY_LOG_LEVEL="INFO")
    log = tmp_path / f"{name}.log"
    args = [arg for part in parts for arg in ("--only", part)]
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(TRACKRELAY, "serve", *args, env=env, cwd=tmp_path,
                                                    stdout=asyncio.subprocess.DEVNULL, stderr=out)
    return Node(proc, log)


async def cli(store_url: str, *args: str, stdin: str = "") -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    env["TRACKRELAY_STORE_URL"] = store_url
    proc = await asyncio.create_subprocess_exec(TRACKRELAY, *args, env=env, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(stdin.encode())
    assert proc.returncode == 0, err.decode()
    return out.decode().strip()


async def test_every_role_twice_on_one_postgresql_started_together_on_an_empty_database(pg_server, tmp_path):
    """Two SMTP, two delivery (one kill -9ed), two hits and an admin node, all started at once on an
    empty database: migrated once, every mail delivered, every hit counted, the admin node sees all."""
    database = f"multinode_{os.getpid()}"
    conn = await asyncpg.connect(pg_server.url())
    await conn.execute(f"CREATE DATABASE {database}")
    await conn.close()
    url = pg_server.url(database)
    sink = SlowSink(delay=0.5)  # slower than submission: the delivery nodes have a backlog to be killed in
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(sink, loop=loop), "127.0.0.1", 0)
    sink.port = server.sockets[0].getsockname()[1]
    roles = [("smtp-1", "smtp"), ("smtp-2", "smtp"), ("delivery-1", "delivery"), ("delivery-2", "delivery"),
             ("hits-1", "hits"), ("hits-2", "hits"), ("admin", "admin")]
    nodes = dict(zip([name for name, _ in roles], await asyncio.gather(
        *(start_role(tmp_path, name, url, sink.port, part) for name, part in roles))))
    try:
        ports = {name: await node.ports() for name, node in nodes.items()}
        conn = await asyncpg.connect(url)
        try:  # seven nodes migrated one database at once: each migration ran exactly once
            versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY version")]
        finally:
            await conn.close()
        assert versions == list(range(1, len(PG_MIGRATIONS) + 1))

        await cli(url, "user", "add", "alice@example.com", "--password-stdin", stdin=PASSWORD + "\n")
        token = await cli(url, "token", "create", "alice@example.com")
        await asyncio.gather(*(smtp_send(ports["smtp-1" if n % 2 else "smtp-2"]["smtp"], html_mail(subject=f"mail {n}"),
                                         rcpts=("bob@example.org",)) for n in range(MAILS)))
        victim = nodes["delivery-1"]
        async with AsyncExitStack() as stack:
            store = PostgresStore(url)
            await store.open()
            stack.push_async_callback(store.close)

            async def victim_has_mail_in_flight() -> bool:
                holders = await store.lock_holders()
                return f"{socket.gethostname()}:{victim.proc.pid}" in holders and len(sink.messages) >= 3

            await wait_until(victim_has_mail_in_flight, timeout=30)
            victim.proc.send_signal(signal.SIGKILL)
            await victim.proc.wait()
            nodes["delivery-3"] = await start_role(tmp_path, "delivery-3", url, sink.port, "delivery")

            async def all_sent() -> bool:
                return (await store.queue_counts()).get("sent") == MAILS

            await wait_until(all_sent, timeout=90)
        subjects = {m.data.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0] for m in sink.messages}
        assert subjects == {f"mail {n}".encode() for n in range(MAILS)}  # none lost
        assert len(sink.messages) - MAILS <= WORKERS  # the documented window of a kill -9

        tokens = {re.search(rb"/o/([A-Za-z0-9_-]+)\.gif", m.data).group(1).decode() for m in sink.messages}
        assert len(tokens) == MAILS
        async with aiohttp.ClientSession() as s:
            for i, tok in enumerate(sorted(tokens)):
                hits = ports["hits-1" if i % 2 else "hits-2"]["hits"]
                async with s.get(f"http://127.0.0.1:{hits}/o/{tok}.gif",
                                 headers={"User-Agent": "Mozilla/5.0 (Windows NT 10.0) Thunderbird/115.0"}) as r:
                    assert r.status == 200

            async def every_open_counted() -> bool:
                async with s.get(f"http://127.0.0.1:{ports['admin']['admin']}/api/v1/messages?limit=500",
                                 headers={"Authorization": f"Bearer {token}"}) as r:
                    listed = (await r.json())["messages"]
                return len(listed) == MAILS and sum(m["opens"] for m in listed) == MAILS

            await wait_until(every_open_counted, timeout=30)
    finally:
        for node in nodes.values():
            await node.stop()
        server.close()
        conn = await asyncpg.connect(pg_server.url())
        await conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        await conn.close()
