"""The relay's upstream side for real: STARTTLS and implicit TLS verified against a CA made in the
test (trustme), the relay's own upstream login, and pooled connections reused across mails."""
from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable

import pytest
import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from conftest import Arrivals, add_user, make_config
from test_smtp_relay import send, simple_mail, wait_status

UPSTREAM_USER = "relay-bot@upstream.test"
UPSTREAM_PASSWORD = "upstream secret 42"


@dataclass
class Got:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    login: bytes | None


@dataclass
class Upstream(Arrivals):
    """An aiosmtpd upstream that counts TCP connections, EHLOs and AUTHs, and can require AUTH."""

    require_auth: bool = False
    port: int = 0
    connections: int = 0
    ehlos: int = 0
    logins: list[bytes] = field(default_factory=list)
    messages: list[Got] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        self.ehlos += 1
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        # AUTH required here rather than with auth_required=True: aiosmtpd warns about that
        # without TLS, and the warning is an error in this suite
        if self.require_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        tls = server.transport is not None and server.transport.get_extra_info("ssl_object") is not None
        login = session.auth_data.login if session.authenticated else None
        self.messages.append(Got(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
                                 tls, login))
        self.arrived.set()
        return "250 2.0.0 Ok: queued"

    def authenticator(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data) -> AuthResult:
        self.logins.append(auth_data.login)
        ok = auth_data.login == UPSTREAM_USER.encode() and auth_data.password == UPSTREAM_PASSWORD.encode()
        return AuthResult(success=ok, handled=False, auth_data=auth_data)  # handled=False: aiosmtpd sends the 535


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "upstream-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
async def serve_upstream(ca: trustme.CA) -> AsyncIterator[Callable]:
    """serve_upstream(mode, require_auth=False) -> a running Upstream; mode is
    "plain", "starttls" (TLS offered, AUTH only after it) or "smtps" (implicit TLS)."""
    servers: list[asyncio.base_events.Server] = []
    loop = asyncio.get_running_loop()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)

    async def start(mode: str, *, require_auth: bool = False) -> Upstream:
        upstream = Upstream(require_auth=require_auth)

        def factory() -> SMTP:
            upstream.connections += 1
            return SMTP(upstream, hostname="upstream.test", loop=loop, authenticator=upstream.authenticator,
                        tls_context=server_ctx if mode == "starttls" else None,
                        # AUTH over plain text only where there is no TLS to wait for
                        auth_require_tls=mode == "starttls")

        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=server_ctx if mode == "smtps" else None)
        servers.append(server)
        upstream.port = server.sockets[0].getsockname()[1]
        return upstream

    yield start
    for server in servers:
        server.close()


def scheme(mode: str) -> str:
    return {"plain": "smtp", "starttls": "smtp+starttls", "smtps": "smtps"}[mode]


async def relay_app(start_app, tmp_path: Path, upstream: Upstream, mode: str, **overrides: str):
    app = await start_app(make_config(tmp_path, f"{scheme(mode)}://127.0.0.1:{upstream.port}", **overrides))
    await add_user(app)
    return app


@pytest.mark.parametrize("mode", ["starttls", "smtps"])
async def test_upstream_tls_verified_with_ca_file(mode, serve_upstream, start_app, tmp_path, ca_file):
    upstream = await serve_upstream(mode)
    app = await relay_app(start_app, tmp_path, upstream, mode, upstream_ca_file=ca_file)
    data = simple_mail()
    await send(app.port("smtp"), data)
    [got] = await upstream.wait_for(1)
    assert got.tls, "the mail crossed to the upstream in clear text"
    assert got.data == data and got.mail_from == "alice@example.com" and got.rcpt_tos == ["bob@example.org"]
    await wait_status(app, 1, "sent")
    await app.stop()


@pytest.mark.parametrize("mode", ["starttls", "smtps"])
async def test_an_untrusted_upstream_certificate_defers_the_mail(mode, serve_upstream, start_app, tmp_path):
    upstream = await serve_upstream(mode)
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))  # not the CA that signed the upstream's certificate
    app = await relay_app(start_app, tmp_path, upstream, mode, upstream_ca_file=str(other_ca),
                          delivery_retry_intervals="1h")
    await send(app.port("smtp"), simple_mail())
    row = await wait_status(app, 1, "deferred")
    detail = row["recipients"][0]["detail"]
    assert "certificate verify failed" in detail.lower(), detail
    assert row["recipients"][0]["status"] == "deferred"
    assert row["has_body"] is True  # kept for the next try: not lost
    assert await app.store.message_row(2) is None  # no DSN: not bounced
    assert upstream.messages == []
    await app.stop()


async def test_relay_login_is_used_against_an_upstream_that_requires_auth(serve_upstream, start_app, tmp_path,
                                                                          ca_file):
    upstream = await serve_upstream("starttls", require_auth=True)
    app = await relay_app(start_app, tmp_path, upstream, "starttls", upstream_ca_file=ca_file,
                          upstream_username=UPSTREAM_USER, upstream_password=UPSTREAM_PASSWORD)
    await send(app.port("smtp"), simple_mail())
    [got] = await upstream.wait_for(1)
    # the relay's own login upstream, not the user's (alice) one
    assert got.login == UPSTREAM_USER.encode() and got.tls
    assert upstream.logins == [UPSTREAM_USER.encode()]
    await wait_status(app, 1, "sent")
    await app.stop()


# A refused upstream login is the relay's problem (e.g. a rotated upstream password), not the
# mail's: it defers (as Postfix's smtp_sasl_auth_soft_bounce does) instead of bouncing every
# recipient with a DSN, so fixing the password delivers the waiting mail. (It bounced before
# 7b3fc05.)
async def test_a_refused_upstream_login_defers_rather_than_bounces(serve_upstream, start_app, tmp_path, ca_file):
    upstream = await serve_upstream("starttls", require_auth=True)
    app = await relay_app(start_app, tmp_path, upstream, "starttls", upstream_ca_file=ca_file,
                          upstream_username=UPSTREAM_USER, upstream_password="rotated yesterday",
                          delivery_retry_intervals="1h")
    await send(app.port("smtp"), simple_mail())
    for _ in range(200):
        row = await app.store.message_row(1)
        if row["status"] != "queued":
            break
        await asyncio.sleep(0.05)
    assert upstream.logins and set(upstream.logins) == {UPSTREAM_USER.encode()}  # PLAIN, then LOGIN
    assert row["status"] == "deferred", row["recipients"][0]
    assert await app.store.message_row(2) is None  # no DSN to the sender
    await app.stop()


@pytest.mark.parametrize("mode", ["plain", "starttls"])
async def test_upstream_connections_are_reused(mode, serve_upstream, start_app, tmp_path, ca_file):
    upstream = await serve_upstream(mode, require_auth=True)
    app = await relay_app(start_app, tmp_path, upstream, mode, upstream_ca_file=ca_file,
                          upstream_username=UPSTREAM_USER, upstream_password=UPSTREAM_PASSWORD)
    for i in range(5):
        await send(app.port("smtp"), simple_mail(subject=f"mail {i}"))
        # "sent" is recorded after the connection went back to the pool
        await wait_status(app, i + 1, "sent")
    got = await upstream.wait_for(5)
    assert [m.data for m in got] == [simple_mail(subject=f"mail {i}") for i in range(5)]
    assert upstream.connections < 5
    assert upstream.connections == 1 and len(upstream.logins) == 1
    # one EHLO per connection, plus the one after STARTTLS
    assert upstream.ehlos == (2 if mode == "starttls" else 1)
    await app.stop()
