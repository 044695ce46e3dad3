"""The opt-out link of tracked copies: /p/<token> on the hits server.

GET and HEAD only show a confirm page, so that no link scanner, prefetcher or preview
opts anyone out; the page's button POSTs to the same URL, which puts the copy's
recipient on the do-not-track list (source "link"). The relay reads that list for
every mail, so the next mail to them goes out untracked.

A copy sent to several recipients at once has no one recipient: its page asks for the
address, and the POST acts only if it is one of that copy's recipients (the answer is
the same either way, so the form tells no one who received the mail).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Protocol, Sequence
from urllib.parse import parse_qs, urlsplit

from relay.metrics import Metrics
from relay.optout_pages import confirm_page, done_page
from relay.records import CopyTarget

MAX_FORM = 4096  # bytes of a POST body; the form has one field
FORM_TYPE = "application/x-www-form-urlencoded"
# nothing on the page loads or runs; it cannot be framed (a framed button could be clicked
# by a trick) and it posts only to itself
PAGE_HEADERS = (
    ("Content-Security-Policy",
     "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)


class OptOutStore(Protocol):
    async def copy_recipients(self, copy_id: int) -> list[str]: ...
    async def privacy_add(self, kind: str, entry: str, *, source: str = ...) -> bool: ...


@dataclass(frozen=True)
class Answer:
    status: int  # 200, 400 or 403; 404 for a token no copy has
    page: bytes | None  # None: the hits server's own not-found page


NOT_FOUND = Answer(404, None)


class OptOut:
    """target: the copy behind a token (the hits server's cached look-up); raises StoreUnavailable
    as the store does."""

    def __init__(self, store: OptOutStore, target: Callable[[str], Awaitable[CopyTarget | None]],
                 metrics: Metrics, public_url: str) -> None:
        self.store = store
        self.target = target
        self.relay = urlsplit(public_url).hostname or public_url
        self.optouts = metrics.counter(
            "trackrelay_optouts_total",
            "Opt-out confirmations on /p/ links: added (to do-not-track), already (listed before), "
            "no_match (an address that is not the shared copy's), refused (a cross-site post)", ("outcome",))

    async def show(self, token: str) -> Answer:
        """GET and HEAD: the confirm page, and nothing else happens."""
        copy = await self.target(token)
        if copy is None:
            return NOT_FOUND
        return Answer(200, confirm_page(self.relay, ask_address=copy.recipient is None))

    async def confirm(self, token: str, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> Answer:
        """POST: the copy's recipient (or the typed address, if it is one of a shared copy's
        recipients) goes on the do-not-track list."""
        copy = await self.target(token)
        if copy is None:
            return NOT_FOUND
        if cross_site(headers):
            self.optouts.inc("refused")
            return Answer(403, confirm_page(self.relay, ask_address=copy.recipient is None,
                                            error="This form must be sent from its own page."))
        if copy.recipient is not None:
            await self._add(copy.recipient)
            return Answer(200, done_page(self.relay, None))
        typed = typed_address(headers, body)
        if not typed:
            return Answer(400, confirm_page(self.relay, ask_address=True, error="Please enter your email address."))
        recipients = {r.lower() for r in await self.store.copy_recipients(copy.copy_id)}
        if typed.lower() in recipients:
            await self._add(typed)
        else:
            self.optouts.inc("no_match")
        return Answer(200, done_page(self.relay, typed))

    async def _add(self, address: str) -> None:
        added = await self.store.privacy_add("dnt", address, source="link")
        self.optouts.inc("added" if added else "already")


def cross_site(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether a browser says the POST came from another site's page.

    The endpoint needs no login and only ever stops tracking, and its unguessable token
    is known only to whoever has the mail, so a session-bound CSRF token would add
    nothing. What is refused is a page elsewhere that learnt a token making a reader's
    browser post it: browsers say where a request comes from (Sec-Fetch-Site, else
    Origin against Host, as Go's CrossOriginProtection checks); a client that sends
    neither is no browser, and can only act for itself.
    """
    fields = {name: value for name, value in headers if name in (b"sec-fetch-site", b"origin", b"host")}
    site = fields.get(b"sec-fetch-site")
    if site is not None:
        return site not in (b"same-origin", b"none")
    origin = fields.get(b"origin")
    if origin is None:
        return False
    return origin == b"null" or urlsplit(origin.decode("latin-1")).netloc.lower() != \
        fields.get(b"host", b"").decode("latin-1").lower()


def typed_address(headers: Sequence[tuple[bytes, bytes]], body: bytes) -> str:
    """The form's email field, trimmed; "" if the body is no form or the field no address."""
    content_type = next((value for name, value in headers if name == b"content-type"), b"")
    if content_type.split(b";")[0].strip().lower() != FORM_TYPE.encode():
        return ""
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return ""
    address = (fields.get("email") or [""])[0].strip()
    return address if "@" in address and len(address) <= 254 else ""  # RFC 5321's longest path
