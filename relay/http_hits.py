"""The public hits server: the open pixel, the click redirector and /healthz.

Handlers are thin: check the token's shape, ask the tracker, answer. The pixel never
waits for the store; a click waits only for the stored URL (cache first).

It runs on aiohttp's low-level server (its HTTP parser and protocol, without the
Application's router, middlewares and signals): four fixed routes do not need them,
and skipping them is a sixth of the time per hit.
"""
from __future__ import annotations

import re
from typing import Sequence
from urllib.parse import quote

from aiohttp import web

from relay.errors import StoreUnavailable
from relay.hit_tracker import HitTracker, RawHit
from relay.netaddr import Network, client_ip

# a transparent 1x1 GIF89a, 43 bytes
GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
       b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
NO_STORE = "no-store, no-cache, must-revalidate, private"
PIXEL_HEADERS = {
    "Content-Type": "image/gif",
    "Cache-Control": NO_STORE,
    "Pragma": "no-cache",
    "Expires": "0",
    "X-Robots-Tag": "noindex",
}
# intake.new_token makes 24 URL-safe characters; anything else is refused before any look-up
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")
POSITION = re.compile(r"[0-9]{1,6}")
PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]*")
NOT_PRINTABLE_ASCII = re.compile(r"[^\x21-\x7e]")
PURPOSE_HEADERS = ("Sec-Purpose", "Purpose", "X-Purpose", "X-Moz")
NOT_FOUND_PAGE = (b"<!doctype html><html><head><meta charset=\"utf-8\"><title>Link not found</title>"
                  b"<meta name=\"robots\" content=\"noindex\"></head><body><h1>Link not found</h1>"
                  b"<p>This link is unknown or no longer valid.</p></body></html>")
UNAVAILABLE_PAGE = (b"<!doctype html><html><head><meta charset=\"utf-8\"><title>Try again</title></head>"
                    b"<body><h1>Temporarily unavailable</h1><p>Please try again in a moment.</p></body></html>")
METHODS = ("GET", "HEAD")


def make_hits_server(tracker: HitTracker, trusted_proxies: Sequence[Network] = ()) -> web.Server:
    # no access log: one log line per pixel would cost more than answering it
    return web.Server(HitsHandler(tracker, tuple(trusted_proxies)), access_log=None)


class HitsHandler:
    """Routes by path: /o/<token>.gif, /c/<token>/<position>, /healthz."""

    def __init__(self, tracker: HitTracker, trusted_proxies: tuple[Network, ...]) -> None:
        self.tracker = tracker
        self.trusted = trusted_proxies

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if request.method not in METHODS:
            return web.Response(status=405, text="405: Method Not Allowed", headers={"Allow": "GET, HEAD"})
        if path.startswith("/o/") and path.endswith(".gif"):
            return self.pixel(request, path[3:-4])
        if path.startswith("/c/"):
            return await self.click(request, path[3:])
        if path == "/healthz":
            return web.Response(text="ok\n", headers={"Cache-Control": NO_STORE})
        return web.Response(status=404, text="404: Not Found")

    def pixel(self, request: web.BaseRequest, token: str) -> web.Response:
        if TOKEN.fullmatch(token):
            self.tracker.observe_open(token, self._raw(request, "open"))
        else:
            self.tracker.unknown.inc("open")
        # the same image for every token: no oracle for guessing
        return web.Response(body=GIF, headers=PIXEL_HEADERS)

    async def click(self, request: web.BaseRequest, rest: str) -> web.Response:
        token, _, position = rest.partition("/")
        tracker = self.tracker
        if not TOKEN.fullmatch(token) or not POSITION.fullmatch(position):
            tracker.unknown.inc("click")
            return _page(404, NOT_FOUND_PAGE)
        raw = self._raw(request, "click", int(position))
        try:
            found = await tracker.link(token, raw.position or 0)
        except StoreUnavailable:
            return _page(503, UNAVAILABLE_PAGE, {"Retry-After": "5"})
        if found is None:
            tracker.unknown.inc("click")
            return _page(404, NOT_FOUND_PAGE)
        target, url = found
        tracker.observe_click(token, target, raw)
        # A plain str header: web.HTTPFound would normalise the URL through yarl (%7E -> ~,
        # host lower-cased, :443 dropped) and break "byte-for-byte" (DESIGN, "Measured").
        return web.Response(status=302, headers={"Location": safe_location(url), "Cache-Control": NO_STORE,
                                                 "Referrer-Policy": "no-referrer"})

    def _raw(self, request: web.BaseRequest, kind: str, position: int | None = None) -> RawHit:
        headers = request.headers
        purpose = ", ".join(v for h in PURPOSE_HEADERS for v in headers.getall(h, ()) if v)
        return RawHit(
            kind=kind,
            method=request.method,
            ip=client_ip(request.remote or "", headers.getall("X-Forwarded-For", []), self.trusted),
            user_agent=header_text(headers.get("User-Agent", "")),
            purpose=purpose,
            at=self.tracker.clock(),
            position=position,
        )


def safe_location(url: str) -> str:
    """The stored URL as a header value: unchanged, except that control characters, spaces
    and non-ASCII are percent-encoded (UTF-8) so they can neither split the header nor be
    mangled by the HTTP layer."""
    if PRINTABLE_ASCII.fullmatch(url):
        return url
    return NOT_PRINTABLE_ASCII.sub(lambda m: quote(m.group(), safe=""), url)


def header_text(value: str) -> str:
    """A header as text the store can keep: aiohttp hands over invalid UTF-8 as lone
    surrogates, which no database accepts; such a value is read as ISO-8859-1 instead
    (HTTP's historical header charset), which keeps every byte."""
    if value.isascii():
        return value
    raw = value.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _page(status: int, body: bytes, extra: dict[str, str] | None = None) -> web.Response:
    headers = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": NO_STORE,
               "X-Robots-Tag": "noindex", **(extra or {})}
    return web.Response(status=status, body=body, headers=headers)
