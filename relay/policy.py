"""Who is tracked and how: pure decisions from the user's policy, the message's controls
and the global privacy rules. No I/O: the caller loads the policy and rules and stores
``TrackingPlan.new_sticky_choice``.

Precedence (DESIGN "Per-message control"), per recipient:
do-not-track list > missing consent (when required) > user policy ``off`` > internal
recipient > message header > subject tag > sticky default (when ``sticky``) > policy
default (``always`` tracks, ``opt-in`` does not).

Layers may leave a dimension open (``Choice.opens``/``clicks`` is None, e.g. a Mailgun
``X-Mailgun-Track-Opens`` header says nothing about clicks): each open dimension comes
from the next layer down, the way Mailgun and Postmark fall back to the account setting.
The user's ``opens``/``clicks`` switches then cap what the chosen layers ask for;
``clicks`` also caps ``text_links`` (it is link tracking too).
"""
from __future__ import annotations

import hashlib

import dataclasses
from dataclasses import dataclass
from typing import Mapping, Sequence

from relay.control import OFF, ON, Choice, MessageControl, parse_track_words

MODES = ("always", "opt-in", "off")


@dataclass(frozen=True)
class UserPolicy:
    mode: str = "opt-in"
    opens: bool = True
    clicks: bool = True
    notify: bool = True
    sticky: bool = True
    sticky_choice: Choice | None = None   # last explicit per-message choice; used only when sticky

    def __post_init__(self) -> None:
        # A policy built from a bad store row or config must fail here, not track by accident.
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {self.mode!r}")


def with_sticky_choice(current: UserPolicy | None, choice: Choice) -> UserPolicy:
    """The user's policy after a message made an explicit choice sticky (a user without a
    policy gets the defaults plus that choice)."""
    return dataclasses.replace(current or UserPolicy(), sticky_choice=choice)


@dataclass(frozen=True)
class PrivacyRules:
    do_not_track: frozenset[str] = frozenset()   # lower-case addresses and "@domain" entries
    consent_required: bool = False
    consented: frozenset[str] = frozenset()      # lower-case addresses with recorded consent


@dataclass(frozen=True)
class RecipientPlan:
    address: str
    opens: bool
    clicks: bool
    text_links: bool
    reason: str

    @property
    def tracked(self) -> bool:
        return self.opens or self.clicks or self.text_links


@dataclass(frozen=True)
class TrackingPlan:
    recipients: tuple[RecipientPlan, ...]
    new_sticky_choice: Choice | None   # the caller stores it as the user's sticky_choice

    @property
    def tracked(self) -> bool:
        return any(r.tracked for r in self.recipients)


def normalize_address(address: str) -> str:
    """Lower-cased bare address for look-ups: blanks and one pair of <> removed."""
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1].strip()
    return address.lower()


def _domain(address: str) -> str:
    return address.rpartition("@")[2] if "@" in address else ""


def _message_choice(policy: UserPolicy, control: MessageControl) -> tuple[Choice, str]:
    """The complete Choice for this message and the name of the layer that decided it."""
    default = ON if policy.mode == "always" else OFF
    layers: list[tuple[Choice | None, str]] = [
        (control.header, "header"),
        (control.subject_tag, "subject tag"),
        (policy.sticky_choice if policy.sticky else None, "sticky"),
        (default, f"default {policy.mode}"),
    ]
    choice: Choice | None = None
    reason = ""
    for layer, name in layers:
        if layer is None or (layer.opens is None and layer.clicks is None):
            continue
        if choice is None:
            choice, reason = layer, name
        else:
            choice = choice.fill(layer)
        if choice.complete:
            break
    assert choice is not None and choice.complete  # the default layer is always complete
    return choice, reason


def decide(policy: UserPolicy, control: MessageControl, *, sender: str,
           recipients: Sequence[str], privacy: PrivacyRules = PrivacyRules(),
           internal_domains: frozenset[str] | None = None) -> TrackingPlan:
    """Per-recipient tracking plan for one message."""
    choice, layer_reason = _message_choice(policy, control)
    if internal_domains is None:
        sender_domain = _domain(normalize_address(sender))
        internal = frozenset({sender_domain}) if sender_domain else frozenset()
    else:
        internal = frozenset(d.strip().lstrip("@").lower() for d in internal_domains)

    plans = []
    for address in recipients:
        key = normalize_address(address)
        domain = _domain(key)
        if (key in privacy.do_not_track or (domain and "@" + domain in privacy.do_not_track)
                or erased_entry(key) in privacy.do_not_track):
            reason = "do-not-track"
        elif privacy.consent_required and key not in privacy.consented:
            reason = "no consent"
        elif policy.mode == "off":
            reason = "policy off"
        elif domain and domain in internal:
            reason = "internal"
        else:
            plans.append(RecipientPlan(
                address=address,
                opens=bool(choice.opens and policy.opens),
                clicks=bool(choice.clicks and policy.clicks),
                text_links=bool(choice.text_links and policy.clicks),
                reason=layer_reason,
            ))
            continue
        plans.append(RecipientPlan(address, False, False, False, reason))

    # The resolved choice (not the capped one) becomes the default: the switches may be
    # turned back on later and should then meet the user's intent. Under mode "off" the
    # message's choice had no effect, so it does not change the default either.
    sticky = choice if control.explicit and policy.sticky and policy.mode != "off" else None
    return TrackingPlan(recipients=tuple(plans), new_sticky_choice=sticky)


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True,
               "false": False, "no": False, "off": False, "0": False}
_BOOL_KEYS = ("opens", "clicks", "notify", "sticky")
POLICY_KEYS = ("mode", *_BOOL_KEYS, "sticky_choice")


def _parse_bool(key: str, value: object) -> bool:
    if isinstance(value, bool):  # the JSON API passes real booleans
        return value
    word = str(value).strip().lower()
    if word not in _BOOL_WORDS:
        raise ValueError(f"{key}: expected true or false, got {value!r}")
    return _BOOL_WORDS[word]


def parse_policy_updates(current: UserPolicy, pairs: Mapping[str, str]) -> UserPolicy:
    """``current`` with ``pairs`` applied (CLI ``key=value`` words or a JSON object).

    Keys: ``mode`` (always|opt-in|off), ``opens``, ``clicks``, ``notify``, ``sticky``
    (true/false, yes/no, on/off, 1/0) and ``sticky_choice`` (``none`` to forget it, or
    X-Track words such as ``off`` or ``opens,clicks``). Changing ``mode`` or turning
    ``sticky`` off forgets the sticky choice: a new default set on purpose must not be
    hidden by an older per-message choice. Raises ValueError naming the key.
    """
    changes: dict[str, object] = {}
    for raw_key, value in pairs.items():
        key = str(raw_key).strip().lower().replace("-", "_")
        if key == "mode":
            mode = str(value).strip().lower()
            if mode not in MODES:
                raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {value!r}")
            changes["mode"] = mode
        elif key in _BOOL_KEYS:
            changes[key] = _parse_bool(key, value)
        elif key == "sticky_choice":
            if value is None or str(value).strip().lower() in ("", "none", "null", "clear"):
                changes[key] = None
            else:
                choice = parse_track_words(str(value))
                if choice is None:
                    raise ValueError(f"sticky_choice: expected none or X-Track words "
                                     f"(on, off, opens, clicks), got {value!r}")
                changes[key] = choice
        else:
            raise ValueError(f"unknown policy key {raw_key!r} (expected one of: {', '.join(POLICY_KEYS)})")

    if "sticky_choice" not in changes and (
            changes.get("mode", current.mode) != current.mode or changes.get("sticky") is False):
        changes["sticky_choice"] = None
    return dataclasses.replace(current, **changes)


PRIVACY_LISTS = ("dnt", "consent")


ERASED_PREFIX = "erased:"


def erased_entry(address: str) -> str:
    """The do-not-track entry an erasure leaves: a digest of the address, so the relay keeps
    not tracking them without the store holding the address itself (invariant 10)."""
    digest = hashlib.sha256(b"trackrelay erased address\0" + normalize_address(address).encode()).hexdigest()
    return ERASED_PREFIX + digest


def privacy_lookups(addresses: Sequence[str]) -> tuple[list[str], list[str]]:
    """The entries a store looks up for these recipients: (do-not-track keys: each address,
    its erased digest and its @domain, consent keys: each address), lower-case."""
    lowered = sorted({a.lower() for a in addresses})
    domains = sorted({"@" + a.rpartition("@")[2] for a in lowered})
    return lowered + [erased_entry(a) for a in lowered] + domains, lowered


def privacy_entry(kind: str, entry: str) -> str:
    """A do-not-track entry is an address or @domain; a consent entry an address. Raises
    ValueError with a clear message; returns the entry as stored (lower-case)."""
    if kind not in PRIVACY_LISTS:
        raise ValueError(f"unknown privacy list {kind!r}: expected dnt or consent")
    entry = entry.strip().lower()
    local, at, domain = entry.rpartition("@")
    if not at or not domain or "." not in domain or " " in entry or (kind == "consent" and not local):
        raise ValueError(f"not an {'address' if kind == 'consent' else 'address or @domain'}: {entry!r}")
    return entry
