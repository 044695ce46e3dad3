"""Typed application state shared by the admin listener's parts (the panel and the JSON API)."""
from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from relay.config import PrivacyConfig
from relay.metrics import Metrics
from relay.netaddr import Network
from relay.store import Store
from relay.records import User


@dataclass(frozen=True)
class AdminSettings:
    admins_see_all: bool = False
    # the policy a user without a stored one actually gets (tracking.default_mode)
    default_mode: str = "opt-in"
    # admin.secret_key: keys the panel's CSRF tokens, so a token is worthless without the config
    secret_key: str = field(default="", repr=False)
    # admin.public_url is https: browsers reach the panel over TLS (a proxy ends it), cookies are Secure
    https: bool = False
    # http.trusted_proxies: their X-Forwarded-Proto (and X-Forwarded-For) are believed
    trusted_proxies: tuple[Network, ...] = ()
    # admin.login_attempts_per_minute, per account and client address
    login_attempts_per_minute: int = 10
    # webhooks: notify.allow_private_targets, notify.timeout, admin.public_url (links in test events)
    allow_private_targets: bool = False
    webhook_timeout: float = 5.0
    panel_url: str = ""
    # the privacy settings, for the admins' privacy page (its report)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)


STORE = web.AppKey("store", Store)
SETTINGS = web.AppKey("settings", AdminSettings)
METRICS = web.AppKey("metrics", Metrics)
# the authenticated user of a request (set by the API's bearer middleware)
USER = web.RequestKey("user", User)


def request_user(request: web.Request) -> User:
    return request[USER]


def mail_scope(user: User, settings: AdminSettings) -> int | None:
    """Whose mail `user` may see: their own (their id), or everyone's (None) for admins when
    admin.admins_see_all is on. One rule for the API and the panel."""
    return None if user.is_admin and settings.admins_see_all else user.id
