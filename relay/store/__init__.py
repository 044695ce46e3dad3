"""The store: values that cross its boundary, and the interface every backend implements.

Backends: sqlite.py (embedded default). Both run the same contract tests.
Times are float unix seconds inside the store; the API renders RFC 3339.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from relay.config import StoreTarget, parse_store_url
from relay.control import Choice
from relay.policy import PrivacyRules, UserPolicy


@dataclass(frozen=True)
class User:
    id: int
    email: str
    is_admin: bool
    password_hash: str = field(repr=False, default="")


@dataclass(frozen=True)
class NewCopy:
    """One rewritten copy: per recipient, or shared by many above tracking.max_split."""

    token: str
    recipient: str | None
    opens: bool
    clicks: bool
    text_links: bool = False


@dataclass(frozen=True)
class NewRecipient:
    address: str
    copy_index: int | None  # index into NewMessage.copies; None = untracked, original bytes


@dataclass(frozen=True)
class NewMessage:
    queue_id: str
    user_id: int | None
    mail_from: str
    message_id: str
    subject: str
    body: bytes
    received_at: float
    client_ip: str
    recipients: tuple[NewRecipient, ...]
    copies: tuple[NewCopy, ...] = ()
    track_opens: bool = False
    track_clicks: bool = False
    sticky_choice: Choice | None = None  # the user's new sticky default, stored with the mail
    is_dsn: bool = False


@dataclass(frozen=True)
class CopyRef:
    id: int
    token: str
    recipient: str | None
    opens: bool
    clicks: bool
    text_links: bool


@dataclass(frozen=True)
class PendingRecipient:
    id: int
    address: str
    attempts: int
    copy: CopyRef | None


@dataclass(frozen=True)
class ClaimedMessage:
    id: int
    queue_id: str
    user_id: int | None
    mail_from: str
    received_at: float
    body: bytes
    recipients: tuple[PendingRecipient, ...]
    links_saved: bool


@dataclass(frozen=True)
class RecipientResult:
    recipient_id: int
    status: str  # "sent", "deferred" or "bounced"
    detail: str = ""
    next_attempt_at: float | None = None  # for "deferred"


@dataclass(frozen=True)
class CopyTarget:
    """What the hits server needs to know about a token."""

    copy_id: int
    message_id: int
    user_id: int | None
    recipient: str | None
    delivered_at: float | None
    links: dict[int, str]


@dataclass(frozen=True)
class NewEvent:
    copy_id: int
    message_id: int
    type: str  # "open" | "click"
    at: float
    position: int | None
    ip: str
    user_agent: str
    cls: str
    implied: bool = False


@dataclass(frozen=True)
class HitCounts:
    """Counts over a set of events. Implied opens (a click on a copy whose open was not
    seen) count as opens of the click's class; machine hits count in opens/clicks only."""

    opens: int = 0
    human_opens: int = 0
    clicks: int = 0
    human_clicks: int = 0
    first_open_at: float | None = None
    last_open_at: float | None = None


@dataclass(frozen=True)
class RecipientReport:
    address: str
    status: str
    tracked: bool
    shared: bool  # the copy went to several recipients: counts are that shared copy's
    counts: HitCounts


@dataclass(frozen=True)
class LinkReport:
    position: int
    url: str
    clicks: int
    human_clicks: int


@dataclass(frozen=True)
class EventReport:
    type: str
    at: float
    recipient: str | None
    url: str | None
    ip: str
    user_agent: str
    cls: str
    implied: bool


@dataclass(frozen=True)
class MessageReport:
    id: int
    user_id: int | None
    message_id: str
    subject: str
    received_at: float
    sent_at: float | None  # first delivery to any recipient
    status: str
    track_opens: bool
    track_clicks: bool
    counts: HitCounts
    recipients: tuple[RecipientReport, ...]
    links: tuple[LinkReport, ...] = ()
    events: tuple[EventReport, ...] = ()


@dataclass(frozen=True)
class Notification:
    id: int
    message_id: int | None  # the store's id, as in /api/v1/messages/<id>
    message_header_id: str  # the mail's Message-ID
    subject: str
    type: str  # "open" | "click"
    recipient: str | None
    url: str | None
    text: str
    at: float
    read: bool


@dataclass(frozen=True)
class PanelSession:
    """A web panel login, found by the hash of its cookie's id."""

    user: User
    created_at: float
    last_seen: float


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...

    # users and credentials
    async def add_user(self, email: str, password_hash: str, is_admin: bool = False) -> User: ...
    async def user_by_email(self, email: str) -> User | None: ...
    async def users(self) -> list[User]: ...
    async def set_password(self, email: str, password_hash: str) -> bool: ...
    async def delete_user(self, email: str) -> bool: ...
    async def add_api_token(self, user_id: int, token_hash: str) -> None: ...
    async def user_by_api_token(self, token_hash: str) -> User | None: ...
    async def policy(self, user_id: int) -> UserPolicy | None: ...
    async def set_policy(self, user_id: int, policy: UserPolicy) -> None: ...
    async def privacy_list(self, kind: str) -> list[str]: ...  # kind: "dnt" or "consent"
    async def privacy_add(self, kind: str, entry: str) -> bool: ...
    async def privacy_del(self, kind: str, entry: str) -> bool: ...
    async def sending_context(self, user_id: int, addresses: Sequence[str]) -> tuple[UserPolicy | None,
                                                                                    PrivacyRules]: ...

    # spool and delivery
    async def spool(self, msg: NewMessage) -> int: ...
    async def claim(self, worker: str, now: float, limit: int, lease: float) -> list[ClaimedMessage]: ...
    async def save_links(self, message_id: int, links: Sequence[tuple[int, str]]) -> None: ...
    async def finish(self, message_id: int, results: Sequence[RecipientResult], now: float,
                     rewrite_note: str | None = None, dsn: NewMessage | None = None) -> str: ...
    async def release(self, worker: str) -> None: ...
    async def lock_holders(self) -> set[str]: ...
    async def retry_now(self, now: float) -> None: ...
    async def capture(self, message_id: int | None, mail_from: str, rcpt_tos: Sequence[str],
                      data: bytes, now: float) -> None: ...

    # hits
    async def copy_target(self, token: str) -> CopyTarget | None: ...
    async def add_events(self, events: Sequence[NewEvent]) -> None: ...
    async def recent_sender_ips(self, user_id: int, since: float) -> frozenset[str]: ...
    async def record_hits(self, events: Sequence[NewEvent]) -> int: ...

    # reports (JSON API, panel, metrics); user_id None = every user's mail
    async def message_reports(self, user_id: int | None, *, tracked: bool | None = None,
                              limit: int = 100, offset: int = 0) -> list[MessageReport]: ...
    async def message_report(self, message_id: int, user_id: int | None,
                             max_events: int = 10000) -> MessageReport | None: ...
    async def notifications(self, user_id: int, limit: int = 100) -> list[Notification]: ...
    async def queue_counts(self) -> dict[str, int]: ...

    # web panel (admin/panel.py): sessions, the panel user's IP, the capture upstream's copies
    async def note_sender_ip(self, user_id: int, ip: str, now: float) -> None: ...
    async def captured(self, message_id: int | None = None) -> list[dict]: ...
    async def add_panel_session(self, id_hash: str, user_id: int, now: float, ip: str) -> None: ...
    async def panel_session(self, id_hash: str) -> PanelSession | None: ...
    async def touch_panel_session(self, id_hash: str, now: float) -> None: ...
    async def delete_panel_session(self, id_hash: str) -> None: ...
    async def delete_stale_panel_sessions(self, seen_before: float, created_before: float) -> int: ...


def open_store(url: str) -> Store:
    target: StoreTarget = parse_store_url(url)
    if target.kind == "sqlite":
        from relay.store.sqlite import SqliteStore

        return SqliteStore(target.path)
    from relay.errors import ConfigError

    raise ConfigError("store.url", "the PostgreSQL backend is not built yet; use sqlite:///PATH")
