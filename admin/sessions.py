"""Web panel sessions, CSRF tokens and login throttling.

The helpers at the top are pure (ids, hashes, tokens, expiry, a rate limiter); the
middleware at the bottom turns a session cookie into request[PANEL_USER] for the panel's views.

A session id is 256 random bits in an HttpOnly cookie; the store keeps only its SHA-256.
CSRF tokens need no storage: a logged-in form carries HMAC(session id, purpose), which
only a page rendered for that cookie can know; the login form (no session yet) uses a
double-submit cookie. Both survive restarts and work across several admin processes.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Literal

from aiohttp import web

from admin.keys import SETTINGS, STORE
from relay.limits import RateLimiter
from relay.netaddr import Network, client_ip, parse_ip
from relay.records import User

SESSION_COOKIE = "trackrelay_session"
LOGIN_COOKIE = "trackrelay_login"  # the login form's CSRF token (double submit)
CSRF_FIELD = "csrf"
# request keys of a logged-in panel request (RequestKey: aiohttp 3.14 warns on plain strings)
PANEL_USER = web.RequestKey("trackrelay_panel_user", User)
STREAM_PATH = "/api/v1/notifications/stream"  # the one API route that also takes the panel's session
SESSION_ID = web.RequestKey("trackrelay_session_id", str)  # the raw id, to derive the CSRF token

IDLE_TIMEOUT = 12 * 3600.0
MAX_AGE = 7 * 86400.0
# last_seen is rewritten at most this often: a page view should not always cost a disk write
TOUCH_EVERY = 60.0
# the panel user's IP is noted as a sender IP ("self" hits) at most this often per user and IP;
# the classifier looks 30 days back, so an hour of lag changes nothing
NOTE_IP_EVERY = 3600.0
LOGIN_ATTEMPTS = 10  # per account and client address a minute (admin.login_attempts_per_minute)
LOGIN_WINDOW = 60.0
# per account from all addresses together, and per address over all accounts: loose enough
# that a guesser at one address does not lock the owner out, tight enough to stop a botnet
WIDE_LIMIT_FACTOR = 10

_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{32,64}")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# pure helpers

def new_secret() -> str:
    """A session id or login token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def plausible(token: str | None) -> bool:
    """Shape check before any query: cookies are attacker-controlled input."""
    return bool(token) and _TOKEN_SHAPE.fullmatch(token) is not None  # type: ignore[arg-type]


def session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def csrf_token(session_id: str, secret_key: str = "") -> str:
    key = secret_key.encode("utf-8") + b"\0" + session_id.encode("ascii")
    return hmac.new(key, b"trackrelay panel csrf", hashlib.sha256).hexdigest()


def csrf_ok(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8", "replace"), given.encode("utf-8", "replace"))


SessionState = Literal["expired", "touch", "fresh"]


def session_state(created_at: float, last_seen: float, now: float, *, idle: float = IDLE_TIMEOUT,
                  max_age: float = MAX_AGE, touch_every: float = TOUCH_EVERY) -> SessionState:
    """expired: log in again; touch: valid, record the activity; fresh: valid, recorded recently."""
    if now - last_seen > idle or now - created_at > max_age:
        return "expired"
    return "touch" if now - last_seen >= touch_every else "fresh"


def safe_next(target: str | None) -> str:
    """Where to go after login: a local path only, never another site (//evil, /\\evil, https:...)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    # ASCII only: it goes into a Location header (login_required hands over the raw, %-encoded path)
    if not (target.isascii() and target.isprintable()) or " " in target or "\\" in target:
        return "/"
    if target.startswith("/login"):
        return "/"
    return target


class LoginThrottle:
    """Login attempts per (account, client address), per account and per address.

    An attempt is counted as it arrives, before its password is checked (argon2 runs in a
    thread, so parallel attempts would all be checked if only failures counted), and only
    when every limit has room: a guesser refused at one address spends nothing of the
    account's wider allowance.
    """

    def __init__(self, per_minute: int = LOGIN_ATTEMPTS, *, clock: Callable[[], float] = time.monotonic) -> None:
        wide = per_minute * WIDE_LIMIT_FACTOR
        self.per_client = RateLimiter(per_minute, LOGIN_WINDOW, max_keys=100000, clock=clock)
        self.per_account = RateLimiter(wide, LOGIN_WINDOW, max_keys=100000, clock=clock)
        self.per_address = RateLimiter(wide, LOGIN_WINDOW, max_keys=100000, clock=clock)

    def attempt(self, account: str, ip: str) -> bool:
        """Count one attempt, or refuse it (False) without counting when a limit is reached."""
        account = account.lower()[:320]  # no address is longer; keeps a flood of huge keys small
        checks = ((self.per_client, (account, ip)), (self.per_account, account), (self.per_address, ip))
        if any(limiter.blocked(key) for limiter, key in checks):
            return False
        for limiter, key in checks:
            limiter.add(key)
        return True


# per-process panel state

@dataclass
class PanelState:
    clock: Callable[[], float] = time.time
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    noted: OrderedDict[tuple[int, str], float] = field(default_factory=OrderedDict)

    def should_note_ip(self, user_id: int, ip: str, now: float, *, max_keys: int = 10000) -> bool:
        key = (user_id, ip)
        last = self.noted.get(key)
        if last is not None and now - last < NOTE_IP_EVERY:
            return False
        self.noted[key] = now
        self.noted.move_to_end(key)
        while len(self.noted) > max_keys:
            self.noted.popitem(last=False)
        return True


PANEL = web.AppKey("panel", PanelState)


def set_session_cookie(response: web.StreamResponse, session_id: str, *, secure: bool) -> None:
    response.set_cookie(SESSION_COOKIE, session_id, max_age=int(MAX_AGE), path="/", httponly=True,
                        samesite="Lax", secure=secure)


def set_login_cookie(response: web.StreamResponse, token: str, *, secure: bool) -> None:
    # Strict is enough here: it only needs to come back with the form posted from our own page
    response.set_cookie(LOGIN_COOKIE, token, path="/login", httponly=True, samesite="Strict", secure=secure)


def forwarded_https(peer: str, forwarded_proto: str | None, trusted: tuple[Network, ...]) -> bool:
    """Whether a trusted proxy says the browser came over https. The first entry is the
    client-facing hop's; from anyone not in `trusted` the header is the client's own say-so."""
    addr = parse_ip(peer)
    if forwarded_proto is None or addr is None or not any(addr in net for net in trusted):
        return False
    return forwarded_proto.split(",")[0].strip().lower() == "https"


def over_tls(request: web.Request) -> bool:
    """Whether the browser reached the panel over TLS, so its cookies must be Secure."""
    settings = request.config_dict[SETTINGS]
    return settings.https or request.secure or forwarded_https(
        request.remote or "", request.headers.get("X-Forwarded-Proto"), settings.trusted_proxies)


def request_ip(request: web.Request) -> str:
    # X-Forwarded-For counts only from http.trusted_proxies, as on the hits server; client_ip
    # canonicalises as the SMTP side and the classifier do (::ffff:a.b.c.d -> a.b.c.d).
    return client_ip(request.remote or "", request.headers.getall("X-Forwarded-For", ()),
                     request.config_dict[SETTINGS].trusted_proxies)


def request_csrf(request: web.Request) -> str:
    """The CSRF token for forms on this logged-in page."""
    return csrf_token(request[SESSION_ID], request.app[SETTINGS].secret_key)


# the middleware

@web.middleware
async def load_session(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A valid session cookie sets request[PANEL_USER] (and the raw id, for CSRF); anything else
    leaves the request anonymous and the views send it to /login."""
    # the API authenticates with bearer tokens, except the bell's stream, which a page opens
    if request.path.startswith("/api/") and request.path != STREAM_PATH:
        return await handler(request)
    session_id = request.cookies.get(SESSION_COOKIE)
    if plausible(session_id):
        assert session_id is not None
        store, state = request.config_dict[STORE], request.config_dict[PANEL]
        id_hash = session_hash(session_id)
        found = await store.panel_session(id_hash)
        now = state.clock()
        status = session_state(found.created_at, found.last_seen, now) if found else None
        if status == "expired":
            await store.delete_panel_session(id_hash)
        elif found is not None:
            if status == "touch":
                await store.touch_panel_session(id_hash, now)
            request[PANEL_USER] = found.user
            request[SESSION_ID] = session_id
            ip = request_ip(request)
            if ip and state.should_note_ip(found.user.id, ip, now):
                await store.note_sender_ip(found.user.id, ip, now)
    return await handler(request)
