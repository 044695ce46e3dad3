"""No I/O: turn an accepted envelope into the spool record (tracking plan, copies, tokens)."""
from __future__ import annotations

import email.errors
import email.header
import email.utils
import secrets
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from relay.control import header_all, header_values, read_controls, strip_controls
from relay.headers import crlf_header_block, header_text
from relay.policy import PrivacyRules, RecipientPlan, UserPolicy, decide
from relay.records import NewCopy, NewMessage, NewRecipient


def new_token() -> str:
    """144 random bits, URL-safe; carries no personal data."""
    return secrets.token_urlsafe(18)


def new_queue_id() -> str:
    return secrets.token_hex(6).upper()


@dataclass(frozen=True)
class TrackingRules:
    default_mode: str = "opt-in"
    internal_domains: frozenset[str] = frozenset()
    max_split: int = 50
    consent_required: bool = False  # privacy.consent = "required"


def owns_address(rule: str, user_email: str, address: str) -> bool:
    """Whether `address` is the user's under an ownership rule: "address" (their own) or
    "domain" (any in their domain); "off" owns everything."""
    address = address.lower()
    if rule == "off":
        return True
    if rule == "domain":
        return address.rpartition("@")[2] == user_email.lower().rpartition("@")[2]
    return address == user_email.lower()


def owns_header_from(raw: bytes, rule: str, user_email: str) -> bool:
    """Whether every address in every From field is the user's; a From field that names no
    address is not (what a reader makes of it is anyone's guess). No From field: nothing forged."""
    for value in header_all(raw, "from"):
        text = _without_comments(header_text(value))
        addresses = [address for _, address in email.utils.getaddresses([text])] if text else []
        if not addresses or not all(a and owns_address(rule, user_email, a) for a in addresses):
            return False
    return True


def _without_comments(text: str) -> str | None:
    """`text` with its RFC 5322 comments (which nest) made blanks, in one pass; None when a
    comment or quoted string is left open. The email package parses nested comments by
    recursion: a few thousand "(" raise RecursionError."""
    out: list[str] = []
    depth, quoted, escaped = 0, False, False
    for c in text:
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif quoted:
            quoted = c != '"'
        elif c == '"' and not depth:
            quoted = True
        elif c == "(":
            depth += 1
            continue
        elif c == ")" and depth:
            depth -= 1
            c = " "
        if not depth:
            out.append(c)
    return None if depth or quoted or escaped else "".join(out)


def header_summary(raw: bytes) -> tuple[str, str]:
    """(Message-ID, Subject decoded for display); robust to broken headers.

    A scan of the raw header block, not an email-package parse: this runs for every mail.
    """
    values = header_values(raw, "message-id", "subject")
    return header_text(values.get("message-id", b"")), display_header(header_text(values.get("subject", b"")))


def display_header(text: str) -> str:
    try:
        parts = email.header.decode_header(text)
        return str(email.header.make_header(parts)).strip()
    except (email.errors.HeaderParseError, LookupError, UnicodeError, ValueError):
        return text.strip()


def build_message(
    raw: bytes,
    *,
    queue_id: str,
    user_id: int | None,
    mail_from: str,
    rcpt_tos: Sequence[str],
    client_ip: str,
    now: float,
    policy: UserPolicy | None,
    privacy: PrivacyRules,
    rules: TrackingRules,
    owner: str = "",
    from_rule: str = "address",
    make_token: Callable[[], str] = new_token,
) -> NewMessage:
    """`owner` is the sending user's address; `from_rule` how owns_address decides for From."""
    raw = crlf_header_block(raw)
    control = read_controls(raw)
    body = strip_controls(raw)
    message_id, subject = header_summary(body)
    plan = decide(
        policy or UserPolicy(mode=rules.default_mode),
        control,
        sender=mail_from,
        recipients=list(rcpt_tos),
        privacy=replace(privacy, consent_required=rules.consent_required),
        internal_domains=rules.internal_domains or None,
    )
    tracked = [r for r in plan.recipients if r.tracked]
    copies: list[NewCopy] = []
    index: dict[str, int] = {}
    if len(tracked) > rules.max_split:
        # one shared copy: its hits cannot name a recipient
        copies.append(NewCopy(make_token(), None, any(r.opens for r in tracked),
                              any(r.clicks for r in tracked), any(_text_links(r) for r in tracked)))
        index = {r.address: 0 for r in tracked}
    else:
        for r in tracked:
            index[r.address] = len(copies)
            copies.append(NewCopy(make_token(), r.address, r.opens, r.clicks, _text_links(r)))
    return NewMessage(
        queue_id=queue_id,
        user_id=user_id,
        mail_from=mail_from,
        message_id=message_id,
        subject=subject,
        body=body,
        received_at=now,
        client_ip=client_ip,
        recipients=tuple(NewRecipient(r.address, index.get(r.address)) for r in plan.recipients),
        copies=tuple(copies),
        track_opens=any(c.opens for c in copies),
        track_clicks=any(c.clicks for c in copies),
        sticky_choice=plan.new_sticky_choice,
        from_owned=bool(owner) and owns_header_from(raw, from_rule, owner),
    )


def _text_links(r: RecipientPlan) -> bool:
    # the rewriter tracks text links only with HTML links: alone they would mark a copy
    # click-tracked that has no tracked link
    return r.clicks and r.text_links
