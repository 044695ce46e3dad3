"""The submission listener: aiosmtpd with a fast DATA reader, async AUTH, and a thin handler.

The handler checks who may relay and hands the mail to the spool; everything after the
250 happens in delivery.py.
"""
from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import re
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from relay.auth import verify_password_async
from relay.credentials import Credentials
from relay.errors import StoreUnavailable
from relay.intake import TrackingRules, build_message, new_queue_id, owns_address
from relay.limits import FailureLimiter, RateLimiter
from relay.policy import PrivacyRules, UserPolicy
from relay.records import NewMessage, User

log = logging.getLogger(__name__)


class IntakeStore(Protocol):
    """What SMTP intake needs of the store."""

    async def user_by_email(self, email: str) -> User | None: ...
    async def sending_context(self, user_id: int, addresses: Sequence[str]) -> tuple[UserPolicy | None,
                                                                                    PrivacyRules]: ...
    async def spool(self, msg: NewMessage) -> int: ...
END_OF_DATA = b"\r\n.\r\n"
# a path with a dot-atom local part and a plain domain: what the full parser returns unchanged
_SIMPLE_PATH = re.compile(r"\s*<([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                          r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(.*)\Z", re.S)
CHUNK = 1 << 16


class _ScannedByAiosmtpd:
    """aiosmtpd's SMTP.__init__ scans dir() of the protocol and of its handler for auth_*,
    smtp_* and handle_* members, and getattr()s every name it finds, on every connection:
    about 0.1 ms, most of a connection's set-up. For our two classes dir() lists just those
    members (the answer depends only on the class, so it is computed once per class)."""

    def __dir__(self) -> tuple[str, ...]:
        return _scanned_names(type(self))


@functools.cache
def _scanned_names(cls: type) -> tuple[str, ...]:
    return tuple(name for name in dir(cls) if name.startswith(("auth_", "smtp_", "handle_")))


@dataclass(frozen=True)
class SmtpPolicy:
    """The slice of config the listener needs."""

    hostname: str
    max_message_size: int
    max_line_length: int
    trusted_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    sender_check: str = "address"
    rate_limit_per_minute: int = 600
    max_recipients: int = 1000
    auth_failures_per_5_minutes: int = 10
    from_check: str = "reject"
    tracking: TrackingRules = field(default_factory=TrackingRules)


class RelayHandler(_ScannedByAiosmtpd):
    def __init__(self, store: IntakeStore, policy: SmtpPolicy, *, on_spooled: Callable[[], None] = lambda: None,
                 credentials: Credentials | None = None, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.policy = policy
        self.on_spooled = on_spooled
        self.credentials = credentials or Credentials()
        self.clock = clock
        self.sending = RateLimiter(policy.rate_limit_per_minute, 60.0)
        # guessing passwords costs the guesser time, not the relay argon2 CPU; counted before
        # the check, so parallel guesses cannot all be checked
        self.auth_failures = FailureLimiter(policy.auth_failures_per_5_minutes, 300.0, max_keys=100000)
        self.accepted = 0
        # who owns an address, for MAIL FROM and header From; a From is owned even with the
        # MAIL FROM check off, or DKIM would sign anything
        self.ownership = "address" if policy.sender_check == "off" else policy.sender_check

    def is_trusted(self, peer: Any) -> bool:
        ip = _peer_ip(peer)
        if not ip or not self.policy.trusted_networks:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.policy.trusted_networks)

    async def login(self, session: Session, login: bytes, password: bytes) -> str | None:
        """None when the login is good, else the reply for the client."""
        ip = _peer_ip(session.peer)
        if not await self.auth_failures.start(ip):
            log.warning("AUTH refused for %s: too many failed logins", ip)
            return "454 4.7.0 Too many failed logins, try again later"
        email = login.decode("utf-8", "replace").strip().lower()
        secret = password.decode("utf-8", "replace")
        checked = False
        try:
            user = _enabled(await self.store.user_by_email(email))
            ok = await verify_password_async(user.password_hash if user else None, secret)
            checked = True
        finally:  # a check the relay could not make (store down) is no failure of the client's
            self.auth_failures.end(ip, failed=checked and not (ok and user is not None))
        if ok and user is not None:
            session.auth_data = user
            self.credentials.remember(user.id, login.decode("utf-8", "replace"), secret)
            return None
        log.info("AUTH failed for %r from %s", email, ip)
        return "535 5.7.8 Authentication credentials invalid"

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        return responses[:-1] + ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_MAIL(self, server: SMTP, session: RelaySession, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        if not _is_address(address):
            return "553 5.1.7 Bad sender address syntax"
        user = session.auth_data if isinstance(session.auth_data, User) else None
        if user is None:
            if not self.is_trusted(session.peer):
                return "530 5.7.0 Authentication required"
            user = _enabled(await self.store.user_by_email(address))
            if user is None:
                return "550 5.7.1 Sender address is not a known user of this relay"
        elif not owns_address(self.policy.sender_check, user.email, address):
            return f"553 5.7.1 Sender address rejected: not owned by {user.email}"
        if not self.sending.allow(user.id):
            return "451 4.7.0 Rate limit exceeded, try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        session.user = user
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.policy.max_recipients:
            return "452 4.5.3 Too many recipients"
        if not _is_address(address):
            return "553 5.1.3 Recipient address must be user@domain"
        if address.lower() not in (a.lower() for a in envelope.rcpt_tos):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: RelaySession, envelope: Envelope) -> str:
        user = session.user
        assert user is not None  # MAIL FROM set it
        raw = envelope.original_content or b""
        rcpts = list(envelope.rcpt_tos)
        try:
            policy, privacy = await self.store.sending_context(user.id, rcpts)
            queue_id = new_queue_id()
            msg = build_message(
                raw, queue_id=queue_id, user_id=user.id, mail_from=envelope.mail_from or "",
                rcpt_tos=rcpts, client_ip=_peer_ip(session.peer), now=self.clock(),
                policy=policy, privacy=privacy, rules=self.policy.tracking,
                owner=user.email, from_rule=self.ownership,
            )
            if not msg.from_owned and self.policy.from_check == "reject":
                return f"550 5.7.1 From header rejected: not owned by {user.email}"
            await self.store.spool(msg)
        except StoreUnavailable as e:
            log.error("spool failed, mail refused with 451: %s", e)
            return "451 4.3.0 Temporary storage failure, try again later"
        self.accepted += 1
        self.on_spooled()
        return f"250 2.0.0 OK queued as {queue_id}"

    async def handle_exception(self, error: Exception) -> str:
        # never show exception text to a client
        log.exception("SMTP session error")
        return "451 4.3.0 Internal error, try again later"


def _is_address(address: str) -> bool:
    """local@domain, both parts present (dotless domains such as localhost are valid)."""
    local, at, domain = address.rpartition("@")
    return bool(at and local and domain)


def _peer_ip(peer: Any) -> str:
    if isinstance(peer, (tuple, list)) and peer:
        return str(peer[0])
    return ""


class RelaySession(Session):
    """aiosmtpd's Session, where `login_data` (still set by aiosmtpd's AUTH after a success) is
    a plain attribute instead of its deprecated property, which logs a warning at every login."""

    login_data: Any = None
    user: User | None = None  # who the current transaction belongs to, set at MAIL FROM


class RelaySMTP(_ScannedByAiosmtpd, SMTP):
    """aiosmtpd's SMTP with a chunked DATA reader and AUTH checked off the event loop.

    aiosmtpd reads DATA a line at a time with a debug log per line: about two thirds of its
    CPU under load (DESIGN, "Measured"). Here DATA is read in 64 KiB chunks and scanned for
    the end marker; line length and size limits are still enforced.
    """

    def __init__(self, handler: RelayHandler, *, max_line_length: int, implicit_tls: bool = False,
                 **kwargs: Any) -> None:
        self.line_length_limit = max_line_length  # read by SMTP.__init__ for its stream limit
        self._implicit_tls = implicit_tls
        self._reply_lines: list[bytes] = []
        super().__init__(handler, **kwargs)
        if implicit_tls:
            self._auth_require_tls = False  # the whole connection is TLS already

    def _create_session(self) -> RelaySession:
        return RelaySession(self.loop)

    async def push(self, status: str | bytes) -> None:
        # a multi-line reply ("250-...") goes out in one write with its last line, not one
        # syscall and drain per line (EHLO alone has ten)
        line = status if isinstance(status, bytes) else status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii")
        self._reply_lines.append(line + b"\r\n")
        if line[3:4] == b"-":
            return
        data, self._reply_lines = b"".join(self._reply_lines), []
        self._writer.write(data)
        await self._writer.drain()

    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        # the builtin PLAIN/LOGIN parsers call this synchronously: hand the credentials on
        return AuthResult(success=False, handled=False, auth_data=auth_data)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verify(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verify(await super().auth_LOGIN(_, args))

    async def _verify(self, result: AuthResult) -> AuthResult:
        creds = result.auth_data
        if not isinstance(creds, LoginPassword):
            return result
        assert self.session is not None
        refusal = await self.event_handler.login(self.session, creds.login, creds.password)
        if refusal is None:
            return AuthResult(success=True, auth_data=self.session.auth_data,
                              message="235 2.7.0 Authentication successful")
        return AuthResult(success=False, handled=False, message=refusal)

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        data, problem = await self._read_data()
        if problem:
            self._set_post_data_state()
            await self.push(problem)
            return
        self.envelope.content = self.envelope.original_content = data
        try:
            status = await self._call_handler_hook("DATA")
        finally:  # DATA's final reply ends the transaction, even when the hook failed
            self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # the common "<local@domain> PARAMS" needs no RFC 5322 parser (10% of the CPU per mail)
        simple = _SIMPLE_PATH.match(arg)
        if simple and not simple.group(2).lstrip(" \t").startswith("("):  # comments: the full parser
            return simple.group(1), simple.group(2).lstrip(" \t")
        # aiosmtpd accepts "<bad" (no closing bracket) and raises IndexError on "<alice@";
        # both are malformed paths: (None, None) makes it answer 553 5.1.3
        if arg.lstrip().startswith("<") and ">" not in arg:
            return None, None
        try:
            return super()._getaddr(arg)
        except (IndexError, ValueError):
            return None, None

    async def _read_data(self) -> tuple[bytes, str | None]:
        reader = DataReader(self.data_size_limit or 0, self.line_length_limit)
        while True:
            chunk = await self._reader.read(CHUNK)
            if not chunk:
                raise ConnectionResetError("connection closed during DATA")
            leftover = reader.feed(chunk)
            if leftover is not None:
                if leftover:  # pipelined commands after the dot: give them back to the reader
                    self._reader._buffer[:0] = leftover  # type: ignore[attr-defined]
                return reader.result()


class DataReader:
    """No I/O: the bytes after DATA's 354, in chunks of any size, up to the lone dot; then the
    message, dot-unstuffed, or the refusal for a message past the size or line-length limit.

    The chunks are scanned for the end marker only where it can newly appear, so the work is
    linear in the bytes read; past the size limit only the tail needed to find the marker is
    kept.
    """

    def __init__(self, size_limit: int, line_length_limit: int) -> None:
        self.size_limit = size_limit  # 0: none
        self.line_length_limit = line_length_limit
        self._buf = bytearray(b"\r\n")  # so that an empty message's lone "." is found too
        self._too_big = False

    def feed(self, chunk: bytes) -> bytes | None:
        """None while the end is still to come; then the bytes that followed the end marker."""
        buf = self._buf
        start = max(0, len(buf) - len(END_OF_DATA) + 1)
        buf += chunk
        end = buf.find(END_OF_DATA, start)
        if end >= 0:
            leftover = bytes(buf[end + len(END_OF_DATA):])
            del buf[end + 2:]
            return leftover
        # too big for sure: more than the limit before the longest end marker that may follow
        if self.size_limit and len(buf) - 2 - len(b".\r\n") > self.size_limit:
            self._too_big = True
            del buf[: max(0, len(buf) - len(END_OF_DATA))]  # (a negative end would cut the tail)
        return None

    def result(self) -> tuple[bytes, str | None]:
        """(message, None), or (b"", the reply refusing it); once feed returned the leftover."""
        buf = self._buf
        if self._too_big or (self.size_limit and len(buf) - 2 > self.size_limit):
            return b"", "552 5.3.4 Message too big for system"
        # the longest line, CR included, via C-speed split (a regex here would be quadratic)
        if max(map(len, buf.split(b"\n"))) > self.line_length_limit + 1:
            return b"", f"500 5.5.6 Line too long (limit {self.line_length_limit})"
        # undo dot-stuffing (RFC 5321 4.5.2)
        return bytes(buf).replace(b"\r\n..", b"\r\n.")[2:], None


async def start_listener(handler: RelayHandler, host: str, port: int, *, tls: ssl.SSLContext,
                         implicit_tls: bool, policy: SmtpPolicy) -> asyncio.base_events.Server:
    loop = asyncio.get_running_loop()
    loopback = _is_loopback(host)

    def factory() -> RelaySMTP:
        return RelaySMTP(
            handler,
            max_line_length=policy.max_line_length,
            implicit_tls=implicit_tls,
            hostname=policy.hostname,
            ident="trackrelay",
            data_size_limit=policy.max_message_size,
            enable_SMTPUTF8=True,
            tls_context=None if implicit_tls else tls,
            auth_require_tls=not loopback,
            timeout=300,
            loop=loop,
        )

    return await loop.create_server(factory, host, port, ssl=tls if implicit_tls else None,
                                    reuse_address=True)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _enabled(user: User | None) -> User | None:
    """A disabled user is no user: no login, no mail from trusted networks."""
    return None if user is None or user.disabled else user
