"""A webhook's settings from user input (the JSON API and the CLI), checked. No I/O: the DNS
check of the target (relay/webhook_target.resolve_and_check) is the caller's.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from relay.config import parse_duration
from relay.errors import ConfigError
from relay.notify_payloads import KINDS
from relay.records import WebhookSpec
from relay.webhook_target import Refused, check_url

EVENTS = ("open", "click", "unopened")
FIELDS = ("url", "kind", "events", "humans_only", "first_only", "unopened_after", "digest", "enabled")
MAX_URL = 2048


def parse_spec(body: Mapping[str, Any], base: WebhookSpec | None = None) -> WebhookSpec:
    """A new spec (base None: `url` required) or base with the given fields changed.
    Raises ValueError naming the field."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise ValueError(f"{unknown[0]}: not a webhook field (expected one of {', '.join(FIELDS)})")
    if base is None and "url" not in body:
        raise ValueError("url: required")
    changes: dict[str, Any] = {}
    if "url" in body:
        changes["url"] = _url(body["url"])
    if "kind" in body:
        if body["kind"] not in KINDS:
            raise ValueError(f"kind: expected one of {', '.join(KINDS)}")
        changes["kind"] = body["kind"]
    if "events" in body:
        changes["events"] = _events(body["events"])
    for flag in ("humans_only", "first_only", "enabled"):
        if flag in body:
            if not isinstance(body[flag], bool):
                raise ValueError(f"{flag}: expected true or false")
            changes[flag] = body[flag]
    for key in ("unopened_after", "digest"):
        if key in body:
            changes[key] = _duration(key, body[key])
    return replace(base, **changes) if base is not None else WebhookSpec(**changes)


def _url(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_URL:
        raise ValueError(f"url: expected an http(s) URL of at most {MAX_URL} characters")
    target = check_url(value)
    if isinstance(target, Refused):
        raise ValueError(f"url: {target.reason}")
    return value


def _events(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v in EVENTS for v in value):
        raise ValueError(f"events: expected a non-empty list of {', '.join(EVENTS)}")
    return tuple(dict.fromkeys(value))


def _duration(key: str, value: Any) -> float:
    if value in ("", None) and key == "digest":
        return 0.0
    try:
        seconds = parse_duration(value, key)
    except ConfigError as e:
        raise ValueError(str(e)) from None
    if key == "unopened_after" and seconds <= 0:
        raise ValueError("unopened_after: must be more than 0")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling: 900 -> "15m"; 0 -> "" (a digest that is off)."""
    if not seconds:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
