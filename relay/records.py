"""Values that cross the store's boundary: plain frozen dataclasses, no driver types.

The engine (intake, delivery, hits) and the panel build and read these; store engines
turn them into rows and back. Times are float unix seconds; the API renders RFC 3339.
"""
from __future__ import annotations

from dataclasses import astuple, dataclass, field

from relay.control import Choice


@dataclass(frozen=True)
class User:
    id: int
    email: str
    is_admin: bool
    password_hash: str = field(repr=False, default="")
    disabled: bool = False  # no login, no mail, no API
    language: str = ""  # the panel's: "en", "hu", or "" (the browser's Accept-Language)
    timezone: str = ""  # an IANA name for the panel's times; "" is UTC


@dataclass(frozen=True)
class UserChanges:
    """What an admin or the user changes on an account; None leaves it as it is."""

    is_admin: bool | None = None
    disabled: bool | None = None
    language: str | None = None
    timezone: str | None = None


@dataclass(frozen=True)
class ApiToken:
    """A user's API token as listed: never its value, which is shown once at creation."""

    id: int
    name: str
    created_at: float
    last_used_at: float | None


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
    from_owned: bool = False  # every header From address is the user's: only then DKIM-signed


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
    from_owned: bool = False
    settled: tuple[str, ...] = ()  # the statuses of its recipients no longer pending (an earlier attempt's)


@dataclass(frozen=True)
class RecipientResult:
    recipient_id: int
    status: str  # "sent", "deferred" or "bounced"
    detail: str = ""
    next_attempt_at: float | None = None  # for "deferred"


@dataclass(frozen=True)
class MessageOutcome:
    """What an attempt's results make of their message (relay/status.py message_outcome)."""

    status: str  # the roll-up: "deferred", "sent", "partial" or "bounced"
    next_attempt_at: float
    sent: bool  # a recipient was sent to, in this attempt or an earlier one
    erase_body: bool  # no recipient waits any more


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
    detail: str = ""  # the upstream's last answer when deferred or bounced


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
class NewNotification:
    """An in-app notification to store (relay/hit_rules.py decides them)."""

    user_id: int | None
    message_id: int
    type: str  # "open" | "click"
    recipient: str | None
    url: str | None
    text: str
    at: float


@dataclass(frozen=True)
class CapturedCopy:
    """A copy the capture upstream kept (the local demo mailbox)."""

    id: int
    message_id: int | None  # None once its message was purged or erased
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    at: float


@dataclass(frozen=True)
class PanelSession:
    """A web panel login, found by the hash of its cookie's id."""

    user: User
    created_at: float
    last_seen: float


@dataclass(frozen=True)
class WebhookSpec:
    """What a user sets on a webhook (admin/webhooks.py validates it)."""

    url: str
    kind: str = "json"
    events: tuple[str, ...] = ("open", "click")  # of "open", "click", "unopened"
    humans_only: bool = True
    first_only: bool = True  # opens: only a copy's first (human) open
    unopened_after: float = 3 * 86400.0
    digest: float = 0.0  # seconds; 0: each event goes at once
    enabled: bool = True


@dataclass(frozen=True)
class Webhook:
    id: int
    user_id: int
    spec: WebhookSpec
    created_at: float
    failing_since: float | None = None
    secret: str = field(repr=False, default="")  # json kind: the signing secret


@dataclass(frozen=True)
class NewDelivery:
    """An outbox row: one event for one webhook. id is the event id, the same on every retry."""

    id: str
    webhook_id: int
    payload: str  # the event as JSON (relay/notify_rules.py builds it)
    due_at: float
    created_at: float


@dataclass(frozen=True)
class ClaimedDelivery:
    id: str
    webhook: Webhook
    payload: str
    attempts: int
    created_at: float


@dataclass(frozen=True)
class Attempt:
    delivery_id: str
    at: float
    status_code: int | None
    latency: float
    error: str


@dataclass(frozen=True)
class DeliveryResult:
    """What one attempt changed (relay/notify_rules.py decides it; the engine writes it at once)."""

    attempt: Attempt
    status: str  # "queued" (retry at due_at), "sent" or "failed"
    due_at: float
    webhook_id: int
    failing_since: float | None  # the webhook's, after this attempt
    disable: bool = False
    notice: NewNotification | None = None  # the owner is told (given up, webhook disabled)


@dataclass(frozen=True)
class DeliveryReport:
    id: str
    status: str
    attempts: int
    last_error: str
    created_at: float
    due_at: float
    payload: str
    tries: tuple[Attempt, ...] = ()


# privacy (relay/privacy.py, trackrelay purge|erase|export|consent import)

@dataclass(frozen=True)
class PrivacyRecord:
    """A do-not-track or consent entry and where it came from."""

    entry: str  # a lower-case address, "@domain" (do-not-track), or an erased address's digest
    recorded_at: float
    recorded_by: str = ""  # who: a user's email, or "" for the command line
    source: str = ""  # "cli", "api", "import:<file>", "link", "erase"
    given_at: float | None = None  # consent: when the person gave it, if known


@dataclass(frozen=True)
class PurgeCounts:
    """Rows a retention purge removed (or, dry, would remove)."""

    events: int = 0
    messages: int = 0
    notifications: int = 0
    captured: int = 0
    deliveries: int = 0

    def __add__(self, other: PurgeCounts) -> PurgeCounts:
        return PurgeCounts(*(a + b for a, b in zip(astuple(self), astuple(other))))

    @property
    def total(self) -> int:
        return sum(astuple(self))


@dataclass(frozen=True)
class ErasureCounts:
    """What erasing one address removed."""

    messages: int = 0  # mail sent to them alone, removed whole
    copies: int = 0  # their copies of mail that went to others too
    recipients: int = 0
    events: int = 0
    links: int = 0  # links whose URL names them
    notifications: int = 0
    deliveries: int = 0  # webhook payloads that name them
    captured: int = 0
    still_queued: int = 0  # mail to them not yet delivered: left to go out, erase again after


@dataclass(frozen=True)
class SubjectEvent:
    type: str  # "open" | "click"
    at: float
    cls: str
    ip: str  # as stored: truncated when privacy.anonymize_ip
    user_agent: str
    url: str | None
    shared: bool  # the copy went to several recipients at once: maybe another one's


@dataclass(frozen=True)
class SubjectMail:
    id: int
    message_id: str
    subject: str
    sender: str
    received_at: float
    status: str  # this recipient's delivery status
    delivered_at: float | None
    tracked_opens: bool
    tracked_clicks: bool
    events: tuple[SubjectEvent, ...]


@dataclass(frozen=True)
class SubjectData:
    """Everything the store holds about one address: the answer to an access request."""

    address: str
    mails: tuple[SubjectMail, ...]
    do_not_track: tuple[PrivacyRecord, ...]
    consent: tuple[PrivacyRecord, ...]
    notifications: tuple[tuple[float, str], ...]  # (at, text) in the senders' bells
    captured: int  # copies the capture upstream keeps that name them
