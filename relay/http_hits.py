"""The public hits server: the open pixel, the click redirector, the opt-out link and /healthz.

An asyncio protocol over httptools (llhttp, Node.js's HTTP parser): every request
is parsed in C and answered from prebuilt bytes, with no request or response objects.
aiohttp's machinery around the same handlers held one process to about a tenth of
nginx's rate (the target is a fifth); this answers pixels and warm clicks with
a few microseconds of Python each. The pixel never waits for the store; a click
waits only for a cold look-up of its URL, and answers stay in request order.

It faces the internet, so everything is bounded: request line, header block and body
sizes, the time to send a request, the idle time of a kept-alive connection, the
answers queued on one connection (pipelining) before its reading pauses, and the open
connections, in all and per client address.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from dataclasses import dataclass
from email.utils import formatdate
from functools import lru_cache
from typing import Sequence
from urllib.parse import quote, unquote

import httptools

from relay.errors import StoreUnavailable
from relay.headers import header_text
from relay.hit_tracker import UNKNOWN, HitTracker, RawHit
from relay.metrics import Metrics
from relay.netaddr import Network, client_ip, parse_ip
from relay.optout import MAX_FORM, OptOut
from relay.optout import PAGE_HEADERS as OPTOUT_HEADERS

log = logging.getLogger(__name__)

# a transparent 1x1 GIF89a, 43 bytes
GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
       b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
NO_STORE = "no-store, no-cache, must-revalidate, private"
PIXEL_HEADERS = (
    ("Content-Type", "image/gif"),
    ("Cache-Control", NO_STORE),
    ("Pragma", "no-cache"),
    ("Expires", "0"),
    ("X-Robots-Tag", "noindex"),
)
PAGE_HEADERS = (("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", NO_STORE),
                ("X-Robots-Tag", "noindex"))
# intake.new_token makes 24 URL-safe characters; anything else is refused before any look-up
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")
POSITION = re.compile(r"[0-9]{1,6}")
PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]*")
NOT_PRINTABLE_ASCII = re.compile(r"[^\x21-\x7e]")
PURPOSE_HEADERS = (b"sec-purpose", b"purpose", b"x-purpose", b"x-moz")
METHODS = ("GET", "HEAD")
OPTOUT_METHODS = ("GET", "HEAD", "POST")
NOT_FOUND_PAGE = (b"<!doctype html><html><head><meta charset=\"utf-8\"><title>Link not found</title>"
                  b"<meta name=\"robots\" content=\"noindex\"></head><body><h1>Link not found</h1>"
                  b"<p>This link is unknown or no longer valid.</p></body></html>")
UNAVAILABLE_PAGE = (b"<!doctype html><html><head><meta charset=\"utf-8\"><title>Try again</title></head>"
                    b"<body><h1>Temporarily unavailable</h1><p>Please try again in a moment.</p></body></html>")
REASONS = {200: "OK", 302: "Found", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 413: "Content Too Large", 414: "URI Too Long",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass(frozen=True)
class HttpLimits:
    max_url: int = 8192  # bytes of the request target
    max_headers: int = 16384  # bytes of a request head: request line and header fields
    max_body: int = 65536  # a GET may carry one; it is read and dropped
    request_timeout: float = 15.0  # from a request's first byte to its last; from accept to a first request
    idle_timeout: float = 60.0  # a kept-alive connection with nothing to do
    max_queued: int = 32  # pipelined answers waiting on one connection before it stops reading
    # open connections; over either cap a new one is closed at once (0: no cap). Per address means
    # the TCP peer's (all that is known at accept), and a trusted proxy's is not capped: its
    # connections carry many clients
    max_connections: int = 10000
    max_connections_per_ip: int = 256


LINGER = 2.0  # seconds a closing connection's leftover input is still read and dropped


class _Refused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def safe_location(url: str) -> str:
    """The stored URL as a header value: unchanged, except that control characters, spaces
    and non-ASCII are percent-encoded (UTF-8) so they can neither split the header nor be
    mangled on the way."""
    if PRINTABLE_ASCII.fullmatch(url):
        return url
    return NOT_PRINTABLE_ASCII.sub(lambda m: quote(m.group(), safe=""), url)


class _Date:
    """The Date header, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True).encode("ascii")
        return self._value


_date = _Date()


def response(status: int, headers: tuple[tuple[str, str], ...], body: bytes = b"", *, head: bool = False,
             close: bool = False) -> bytes:
    return b"".join((_head_lines(status, headers), b"Content-Length: %d\r\nDate: " % len(body), _date(),
                     b"\r\nConnection: close\r\n\r\n" if close else b"\r\n\r\n", b"" if head else body))


@lru_cache(maxsize=4096)  # fixed answers, and the redirects of the links being clicked now
def _head_lines(status: int, headers: tuple[tuple[str, str], ...]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS[status]}\r\n"] + [f"{name}: {value}\r\n" for name, value in headers]
    return "".join(lines).encode("latin-1")


def _page(status: int, body: bytes, head: bool, close: bool, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    return response(status, PAGE_HEADERS + extra, body, head=head, close=close)


class HitsServer:
    """The routes, and the open connections (closed gracefully by close())."""

    def __init__(self, tracker: HitTracker, trusted_proxies: Sequence[Network] = (),
                 limits: HttpLimits = HttpLimits(), metrics: Metrics | None = None,
                 optout: OptOut | None = None) -> None:
        self.tracker = tracker
        self.optout = optout
        self.trusted = tuple(trusted_proxies)
        self.limits = limits
        self.connections: set[HitsConnection] = set()
        self._per_address: dict[str, int] = {}  # open connections by peer address
        self._sweeper: asyncio.Task | None = None
        metrics = metrics or Metrics()
        self.refused = metrics.counter("trackrelay_http_connections_refused_total",
                                       "Connections to the hits server closed at once, over a cap", ("reason",))
        metrics.collector("trackrelay_http_connections_open", "Open connections to the hits server",
                          lambda: {(): len(self.connections)})

    def protocol(self) -> HitsConnection:
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep())
        return HitsConnection(self)

    # routes: each returns the answer's bytes, or a task that will

    def answer(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], remote: str,
               close: bool, body: bytes = b"") -> bytes | asyncio.Task:
        head = method == "HEAD"
        try:
            path = httptools.parse_url(target).path
        except httptools.HttpParserInvalidURLError:
            raise _Refused(400) from None
        text = path.decode("latin-1") if path else ""
        if "%" in text:
            text = unquote(text)
        if text.startswith("/p/") and self.optout is not None:
            return self.opt_out(self.optout, text[3:], method, headers, body, close)
        if method not in METHODS:
            return response(405, (("Allow", "GET, HEAD"), ("Content-Type", "text/plain; charset=utf-8")),
                            b"405: Method Not Allowed", close=close)
        if text.startswith("/o/") and text.endswith(".gif"):
            return self.pixel(text[3:-4], method, headers, remote, close)
        if text.startswith("/c/"):
            return self.click(text[3:], method, headers, remote, close)
        if text == "/healthz":
            return response(200, (("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", NO_STORE)),
                            b"ok\n", head=head, close=close)
        return response(404, (("Content-Type", "text/plain; charset=utf-8"),), b"404: Not Found", head=head,
                        close=close)

    def pixel(self, token: str, method: str, headers: list[tuple[bytes, bytes]], remote: str,
              close: bool) -> bytes:
        if TOKEN.fullmatch(token):
            self.tracker.observe_open(token, self._raw("open", method, headers, remote))
        else:
            self.tracker.unknown.inc("open")
        # the same image for every token: no oracle for guessing
        return response(200, PIXEL_HEADERS, GIF, head=method == "HEAD", close=close)

    def click(self, rest: str, method: str, headers: list[tuple[bytes, bytes]], remote: str,
              close: bool) -> bytes | asyncio.Task:
        token, _, digits = rest.partition("/")
        head = method == "HEAD"
        if not TOKEN.fullmatch(token) or not POSITION.fullmatch(digits):
            self.tracker.unknown.inc("click")
            return _page(404, NOT_FOUND_PAGE, head, close)
        position = int(digits)
        raw = self._raw("click", method, headers, remote, position)
        found = self.tracker.cached_destination(token, position)
        if found is UNKNOWN:
            return asyncio.create_task(self._cold_click(token, raw, head, close))
        return self._redirect(token, raw, found, head, close)  # type: ignore[arg-type]

    async def _cold_click(self, token: str, raw: RawHit, head: bool, close: bool) -> bytes:
        try:
            found = await self.tracker.destination(token, raw.position or 0)
        except StoreUnavailable:
            return _page(503, UNAVAILABLE_PAGE, head, close, (("Retry-After", "5"),))
        return self._redirect(token, raw, found, head, close)

    def _redirect(self, token: str, raw: RawHit, found: tuple | None, head: bool, close: bool) -> bytes:
        if found is None:
            self.tracker.unknown.inc("click")
            return _page(404, NOT_FOUND_PAGE, head, close)
        target, url = found
        if target is None:  # a link in mail purged by retention: still goes where it went, records nothing
            self.tracker.unknown.inc("retired")
        else:
            self.tracker.observe_click(token, target, raw)
        # the stored URL byte for byte: no URL library gets to normalise it on the way out
        return response(302, (("Location", safe_location(url)), ("Cache-Control", NO_STORE),
                              ("Referrer-Policy", "no-referrer")), head=head, close=close)

    def opt_out(self, optout: OptOut, token: str, method: str, headers: list[tuple[bytes, bytes]], body: bytes,
                close: bool) -> bytes | asyncio.Task:
        if method not in OPTOUT_METHODS:
            return response(405, (("Allow", ", ".join(OPTOUT_METHODS)), ("Content-Type", "text/plain; charset=utf-8")),
                            b"405: Method Not Allowed", close=close)
        head = method == "HEAD"
        if not TOKEN.fullmatch(token):
            return _page(404, NOT_FOUND_PAGE, head, close)
        return asyncio.create_task(self._opt_out(optout, token, method, headers, body, close))

    async def _opt_out(self, optout: OptOut, token: str, method: str, headers: list[tuple[bytes, bytes]],
                       body: bytes, close: bool) -> bytes:
        head = method == "HEAD"
        try:
            if method == "POST":
                answer = await optout.confirm(token, headers, body)
            else:
                answer = await optout.show(token)
        except StoreUnavailable:
            return _page(503, UNAVAILABLE_PAGE, head, close, (("Retry-After", "5"),))
        if answer.page is None:
            return _page(404, NOT_FOUND_PAGE, head, close)
        return _page(answer.status, answer.page, head, close, OPTOUT_HEADERS)

    def _raw(self, kind: str, method: str, headers: list[tuple[bytes, bytes]], remote: str,
             position: int | None = None) -> RawHit:
        user_agent = b""
        forwarded: list[str] = []
        purposes: dict[bytes, list[str]] = {}
        for name, value in headers:
            if name == b"user-agent":
                user_agent = user_agent or value
            elif name == b"x-forwarded-for":
                forwarded.append(value.decode("latin-1"))
            elif name in PURPOSE_HEADERS and value:
                purposes.setdefault(name, []).append(header_text(value))
        return RawHit(
            kind=kind,
            method=method,
            ip=client_ip(remote, forwarded, self.trusted),
            user_agent=header_text(user_agent),
            purpose=", ".join(v for h in PURPOSE_HEADERS for v in purposes.get(h, ())),
            at=self.tracker.clock(),
            position=position,
        )

    # connections

    def admit(self, conn: HitsConnection) -> bool:
        """Take a new connection in, or count why not: over the process's cap or its address's."""
        if self.limits.max_connections and len(self.connections) >= self.limits.max_connections:
            self.refused.inc("max_connections")
            return False
        count = self._per_address.get(conn.remote, 0)
        if self.limits.max_connections_per_ip and count >= self.limits.max_connections_per_ip \
                and not self._is_proxy(conn.remote):
            self.refused.inc("max_connections_per_ip")
            return False
        self._per_address[conn.remote] = count + 1
        self.connections.add(conn)
        return True

    def release(self, conn: HitsConnection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            count = self._per_address.pop(conn.remote) - 1
            if count:
                self._per_address[conn.remote] = count

    def _is_proxy(self, address: str) -> bool:
        ip = parse_ip(address)
        return ip is not None and any(ip in net for net in self.trusted)

    async def _sweep(self) -> None:
        """Close connections that are too slow to send a request, or idle too long."""
        while True:
            await asyncio.sleep(min(1.0, self.limits.request_timeout / 4))
            now = time.monotonic()
            for conn in list(self.connections):
                conn.check_time(now)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop reading; send every answer still due, then close (forcibly after timeout)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            conn.finish()
        deadline = time.monotonic() + timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.abort()


class HitsConnection(asyncio.Protocol):
    """One client connection: feeds the parser, queues answers in order, writes them."""

    def __init__(self, server: HitsServer) -> None:
        self.server = server
        self.limits = server.limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.remote = ""
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body_bytes = 0
        self._form: list[bytes] | None = None  # the body of an opt-out POST; other bodies are dropped
        self._started: float | None = None  # the monotonic time the current request began
        self._in_head = False  # the current request's header block has not ended yet
        # bytes of the unfinished request so far (at most); None while the piece it began in is fed
        self._request_bytes: int | None = None
        self._last_active = self._opened = time.monotonic()
        self._asked = False  # a request has begun on this connection
        self._queue: deque[bytes | asyncio.Task] = deque()
        self._closing = False  # close once the queue is written
        self._eof_sent: float | None = None
        self._peer_eof = False
        self._stopping = False  # the server shuts down: no lingering
        self._reading = True
        self._can_write = True

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else ""
        if not self.server.admit(self):
            self._closing = True
            transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.release(self)
        self._drop_queue()
        self._closing = True

    def _drop_queue(self) -> None:
        for item in self._queue:
            if isinstance(item, asyncio.Task):
                # the click is still recorded (the task goes on); only its answer has nowhere to go
                item.add_done_callback(_consume)
        self._queue.clear()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._last_active = time.monotonic()
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade:
            self._closing = True  # answered as a plain request; no protocol switch here
        except httptools.HttpParserCallbackError as e:
            status = e.__context__.status if isinstance(e.__context__, _Refused) else 500
            if status == 500:
                log.error("hits request failed", exc_info=e.__context__)
            self._refuse(status)
        except httptools.HttpParserError:
            self._refuse(400)
        self._flush()

    def _feed(self, data: bytes) -> None:
        """Feed the parser no more at once than the unfinished request may still have.

        httptools keeps the pieces of a header until its line ends and only then hands it
        over: counted there, a header value sent in endless chunks grew without bound (at a
        cost quadratic in its length). So the bytes are counted here, as they arrive."""
        view, start = memoryview(data), 0
        while start < len(data) and not self._closing:
            end = min(len(data), start + self._room())
            self.parser.feed_data(view[start:end])
            if self._started is not None:
                self._count(data, start, end)
            start = end

    def _room(self) -> int:
        if self._started is None:
            return self.limits.max_headers
        return self._request_limit() - self._request_bytes  # type: ignore[operator]

    def _request_limit(self) -> int:
        # past its head, a request's body, chunk framing and trailers are bounded together
        return self.limits.max_headers + (0 if self._in_head else self.limits.max_body)

    def _count(self, data: bytes, start: int, end: int) -> None:
        """After a piece that left a request unfinished: its bytes so far, at most. All of the
        piece if the request began earlier, else what follows the piece's last blank line
        (an unfinished head has none; before it came the end of the previous request)."""
        if self._request_bytes is None:
            blank = data.rfind(b"\r\n\r\n", start, end)
            self._request_bytes = end - (blank + 4 if blank >= 0 else start)
        else:
            self._request_bytes += end - start
        if self._request_bytes >= self._request_limit():
            self._refuse(431 if self._in_head else 413)

    def eof_received(self) -> bool:
        # the client sent all it will: answer what it asked, then close
        self._peer_eof = self._closing = True
        if self._eof_sent is not None:
            return False  # we had said our last word too: the transport closes itself
        self._flush()
        return True  # keep the transport open for the answers still being made

    def pause_writing(self) -> None:
        self._can_write = False
        self._pause()

    def resume_writing(self) -> None:
        self._can_write = True
        self._resume()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body_bytes, self._request_bytes = b"", [], 0, None
        self._form = None
        self._in_head = self._asked = True
        self._started = time.monotonic()

    def on_url(self, url: bytes) -> None:
        if len(self._url) + len(url) > self.limits.max_url:
            raise _Refused(414)
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))  # their size is bounded by _feed

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self.parser.get_method() == b"POST" and self._url.startswith(b"/p/"):
            self._form = []

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > (self.limits.max_body if self._form is None else MAX_FORM):
            raise _Refused(413)
        if self._form is not None:
            self._form.append(body)

    def on_message_complete(self) -> None:
        self._started = None
        if self._closing:  # pipelined after a request that asked to close: not ours to answer
            return
        close = not self.parser.should_keep_alive()
        method = self.parser.get_method().decode("ascii", "replace")
        body = b"".join(self._form) if self._form else b""
        self._push(self.server.answer(method, self._url, self._headers, self.remote, close, body))
        if close:
            self._closing = True

    # the answer queue

    def _push(self, item: bytes | asyncio.Task) -> None:
        self._queue.append(item)
        if isinstance(item, asyncio.Task):
            item.add_done_callback(lambda _t: self._flush())
            if len(self._queue) >= self.limits.max_queued:
                self._pause()

    def _flush(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        out = []
        while self._queue and (isinstance(self._queue[0], bytes) or self._queue[0].done()):
            item = self._queue.popleft()
            if isinstance(item, bytes):
                out.append(item)
            elif item.cancelled() or item.exception() is not None:
                if not item.cancelled():
                    log.error("hits request failed", exc_info=item.exception())
                out.append(response(500, PAGE_HEADERS, b"", close=True))
                self._closing = True
                self._drop_queue()
            else:
                out.append(item.result())
        if out:
            self.transport.write(b"".join(out))
        if self._closing and not self._queue:
            self._linger()
        elif len(self._queue) < self.limits.max_queued:
            self._resume()

    def _linger(self) -> None:
        """Close after the last answer without losing it: closing a socket with unread
        request bytes sends a reset, which can destroy the answer in flight. So send our
        end-of-stream, read and drop what still comes, and close when the client does
        (or LINGER seconds later)."""
        if self._eof_sent is not None:
            return
        if self._peer_eof or self._stopping or not self.transport.can_write_eof():
            self.transport.close()
            return
        self._eof_sent = time.monotonic()
        self.transport.write_eof()
        self._reading = True
        self.transport.resume_reading()

    def _refuse(self, status: int) -> None:
        """A request we will not serve: answer after the ones before it, then close."""
        self._queue.append(_page(status, f"<h1>{status} {REASONS[status]}</h1>".encode(), False, True))
        self._closing = True

    def _pause(self) -> None:
        if self._reading and self.transport is not None:
            self._reading = False
            self.transport.pause_reading()

    def _resume(self) -> None:
        if not self._reading and self._can_write and self.transport is not None and not self._closing:
            self._reading = True
            self.transport.resume_reading()

    # timeouts and shutdown (called by the server)

    def check_time(self, now: float) -> None:
        if self._eof_sent is not None and now - self._eof_sent > LINGER:
            self.abort()
        if self._closing:
            return
        if self._started is not None and now - self._started > self.limits.request_timeout:
            self._refuse(408)
            self._flush()
        elif self._started is None and not self._queue and (
                now - self._last_active > self.limits.idle_timeout
                # connected but silent: idle connections must not pile up for a whole idle_timeout
                or not self._asked and now - self._opened > self.limits.request_timeout):
            self.abort()

    def finish(self) -> None:
        """Answer what was asked, then close; nothing more is read."""
        self._pause()
        self._closing = self._stopping = True
        self._flush()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _consume(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()
