"""Configuration: one TOML file plus TRACKRELAY_<SECTION>_<KEY> overrides, validated once.

Each part of the relay receives its own frozen section, never the whole thing.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from relay.errors import ConfigError
from relay.notice import problem as notice_problem

ENV_PREFIX = "TRACKRELAY_"
# the parts `trackrelay serve` runs; each also runs alone with --only PART
PARTS = ("smtp", "delivery", "hits", "admin", "notify")
DEFAULT_FILE = "trackrelay.toml"


class Secret(str):
    """A string that keeps out of logs and reprs."""

    def __repr__(self) -> str:
        return "Secret('***')" if self else "Secret('')"


def setting(default: Any = dataclasses.MISSING, doc: str = "", *, factory: Any = dataclasses.MISSING,
            fresh_secret: bool = False) -> Any:
    """A config key and its one-line comment, the one `trackrelay init` writes above it.
    fresh_secret: init writes a new random value; a factory default (the machine's own) stays commented out."""
    meta = {"doc": doc, "fresh_secret": fresh_secret}
    return field(default=default, default_factory=factory, metadata=meta)


@dataclass(frozen=True)
class SmtpConfig:
    listen: str = setting("127.0.0.1:2525",
                          "submission listener (plain + STARTTLS); AUTH needs TLS unless it is on loopback")
    tls_listen: str = setting("", "implicit TLS listener, port 465 style (empty: off)")
    tls_cert: str = setting("", "PEM certificate; empty: a self-signed pair is made at start under var/tls/")
    tls_key: str = setting("", "PEM private key of tls_cert")
    hostname: str = setting(doc="EHLO and banner name (default: this machine's name)", factory=socket.getfqdn)
    max_message_size: int = setting(36700160, "advertised SIZE in bytes; larger mail gets 552")
    max_line_length: int = setting(8192, "longest DATA line accepted (real clients exceed RFC 5321's 1000)")
    trusted_networks: tuple[str, ...] = setting(
        (), "CIDRs that relay without AUTH; their mail belongs to the user owning MAIL FROM")
    sender_check: str = setting(
        "address", 'MAIL FROM must be the user\'s address ("address"), in its domain ("domain"), or "off"')
    rate_limit_per_minute: int = setting(600, "messages per user per minute (0: no limit)")
    max_recipients: int = setting(1000, "recipients per mail (452 beyond)")
    auth_failures_per_5_minutes: int = setting(
        10, "failed logins per client address in 5 minutes before AUTH is refused (0: no limit)")
    from_check: str = setting(
        "reject",
        'header From must be the user\'s own, as sender_check decides ("reject"), or "off" (shared mailboxes)')


@dataclass(frozen=True)
class UpstreamConfig:
    url: str = setting("capture:", "smtp://h:p, smtp+starttls://h:p, smtps://h:p, or capture: (keep mail in the store)")
    username: str = setting("", "the relay's own upstream login")
    password: Secret = setting(Secret(""), "password of that login")
    auth: str = setting("relay", '"relay" (the login above) or "passthrough" (each user\'s own SMTP login)')
    timeout: float = setting(60.0, "seconds to wait for the upstream's answers")
    pool_size: int = setting(20, "upstream connections kept open and reused")
    ca_file: str = setting("", "CA bundle to verify the upstream's certificate (empty: the system's CAs)")


@dataclass(frozen=True)
class HttpConfig:
    listen: str = setting("127.0.0.1:8080", "public hits server (pixel and click redirects)")
    public_url: str = setting("http://127.0.0.1:8080", "base URL of the hits server written into mail")
    trusted_proxies: tuple[str, ...] = setting((), "CIDRs of reverse proxies whose X-Forwarded-For is believed")
    hit_queue_size: int = setting(
        100000, "hits waiting for the store before more are dropped (and counted); as many again that may notify")
    max_connections: int = setting(
        10000, "open connections per hits process; a new one beyond is closed at once (0: no cap)")
    max_connections_per_ip: int = setting(
        256, "the same per client address (the TCP peer; trusted_proxies are not capped) (0: no cap)")


@dataclass(frozen=True)
class AdminConfig:
    listen: str = setting("127.0.0.1:8081", "panel and JSON API (keep it private)")
    public_url: str = setting("http://127.0.0.1:8081",
                              "the panel's address as browsers see it (links in notifications); "
                              "https:// makes its cookies Secure")
    login_attempts_per_minute: int = setting(
        10, "panel logins per account and client address a minute; ten times that per account (0: no limit)")
    admins_see_all: bool = setting(False, "admins see every user's mail, not only their own")
    secret_key: Secret = setting(Secret(""), "signs the panel's sessions and CSRF tokens", fresh_secret=True)


@dataclass(frozen=True)
class StoreConfig:
    url: str = setting("sqlite:///var/trackrelay.db",
                       "sqlite:///relative/path.db, sqlite:////absolute/path.db or postgresql://user:pw@host/db")
    connections: int = setting(
        0, "PostgreSQL: the most connections each process opens (0: 4); leave 0 with SQLite")


@dataclass(frozen=True)
class TrackingConfig:
    default_mode: str = setting("opt-in", 'for users without their own policy: "always", "opt-in" or "off"')
    internal_domains: tuple[str, ...] = setting(
        (), "recipients here are never tracked (empty: the sender's own domain)")
    max_split: int = setting(50, "per-recipient copies up to this many tracked recipients, then one shared copy")
    pixel_position: str = setting("bottom", '"bottom", or "top" (for Gmail\'s clipping of long mail)')
    machine_window: float = setting(10.0, "clicks this soon after delivery are a scanner's")
    # with one process, tracked mail queued for it under load (140 ms a message at 250 msg/s)
    rewrite_processes: int = setting(2, "worker processes that rewrite tracked mail (0: on the event loop)")
    rewrite_timeout: float = setting(5.0, "past this a rewrite is given up and the mail goes out untracked")


@dataclass(frozen=True)
class DeliveryConfig:
    retry_intervals: tuple[float, ...] = setting((60.0, 300.0, 900.0, 3600.0, 14400.0),
                                                 "waits between tries (the last repeats)")
    max_age: float = setting(5 * 86400.0, "then a deferred mail bounces with a DSN to its sender")
    workers: int = setting(60, "messages in delivery at once; upstream.pool_size caps the connections")
    # never with upstream.auth = "passthrough": the passwords are in the SMTP process's memory
    separate_process: bool = setting(
        True, "serve delivers from a child process, so intake and delivery each get a core")


@dataclass(frozen=True)
class NotifyConfig:
    allow_private_targets: bool = setting(False, "webhooks to loopback/private addresses (SSRF guard)")
    retry_intervals: tuple[float, ...] = setting((10.0, 60.0, 300.0, 1800.0, 7200.0, 21600.0),
                                                 "waits between webhook attempts (the last repeats)")
    max_age: float = setting(86400.0, "then a webhook delivery is given up and its owner told")
    timeout: float = setting(5.0, "per webhook request")


@dataclass(frozen=True)
class PrivacyConfig:
    anonymize_ip: bool = setting(True, "store IPv4 /24 and IPv6 /48 only")
    consent: str = setting("none", '"none", or "required": only recipients with recorded consent are tracked')
    retention_days: int = setting(365, "events older than this are purged, and mail whose activity all is (0: keep forever)")
    purge_time: str = setting("03:30", "when the running server purges, daily (HH:MM, the machine's local time)")
    optout_link: bool = setting(
        False, "tracked copies carry a one-line notice with a link to stop being tracked (<http.public_url>/p/...)")
    disclosure_text: str = setting(
        "", "a notice appended to the text parts of tracked copies (and, escaped, to HTML parts if no html one)")
    disclosure_html: str = setting("", "the same for HTML parts, as an HTML fragment (empty: disclosure_text)")


@dataclass(frozen=True)
class DkimConfig:
    domain: str = setting("", "sign rewritten mail for this domain (set domain, selector and key_file together)")
    selector: str = setting("", "DKIM selector published in DNS")
    key_file: str = setting("", "PEM private key")
    resign: bool = setting(False, "also rewrite mail a client signed already, and sign it again")


@dataclass(frozen=True)
class Config:
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    dkim: DkimConfig = field(default_factory=DkimConfig)
    source: str = "built-in defaults"


_MISSING = object()
DURATION_KEYS = {
    ("tracking", "machine_window"),
    ("tracking", "rewrite_timeout"),
    ("delivery", "retry_intervals"),
    ("delivery", "max_age"),
    ("notify", "retry_intervals"),
    ("notify", "max_age"),
    ("notify", "timeout"),
}
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any, key: str) -> float:
    """'10s', '5m', '4h', '5d' or a number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a duration like '5m', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*", str(value))
        if not m:
            raise ConfigError(key, f"expected a duration like '10s', '5m', '4h', '5d', got {value!r}")
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds < 0:
        raise ConfigError(key, "a duration cannot be negative")
    if not math.isfinite(seconds) or seconds > 100 * 365 * 86400:
        raise ConfigError(key, f"a duration of at most 100 years, got {value!r}")
    return seconds


def config_path(cli_path: str | None, environ: Mapping[str, str]) -> Path | None:
    if cli_path:
        return Path(cli_path)
    if environ.get("TRACKRELAY_CONFIG"):
        return Path(environ["TRACKRELAY_CONFIG"])
    if Path(DEFAULT_FILE).is_file():
        return Path(DEFAULT_FILE)
    return None


def load(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment, and validate. Raises ConfigError naming the key."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    source = "built-in defaults"
    if path is not None:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(str(path), "config file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(str(path), f"cannot read config file: {e}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(str(path), f"invalid TOML: {e}") from None
        source = str(path)
    sections = {}
    for sec in fields(Config):
        if sec.name == "source":
            continue
        sections[sec.name] = _build_section(sec.name, sec.default_factory, raw.pop(sec.name, {}), environ)
    if raw:
        raise ConfigError(next(iter(raw)), "unknown config section")
    _check_env_names(environ)
    cfg = Config(**sections, source=source)
    _validate(cfg)
    return cfg


def _build_section(name: str, factory: Any, values: Any, environ: Mapping[str, str]) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(name, "must be a table, e.g. [" + name + "]")
    values = dict(values)
    defaults = factory()
    kwargs = {}
    for f in fields(defaults):
        key = f"{name}.{f.name}"
        env_name = f"{ENV_PREFIX}{name.upper()}_{f.name.upper()}"
        in_file = values.pop(f.name, _MISSING)
        if env_name in environ:
            value: Any = _from_env(environ[env_name], getattr(defaults, f.name), key)
        elif in_file is not _MISSING:
            value = in_file
        else:
            continue
        kwargs[f.name] = _coerce(value, getattr(defaults, f.name), key, (name, f.name) in DURATION_KEYS)
    if values:
        raise ConfigError(f"{name}.{next(iter(values))}", "unknown config key")
    return dataclasses.replace(defaults, **kwargs)


def _check_env_names(environ: Mapping[str, str]) -> None:
    """A typo in an override name must not be silently ignored."""
    known = {"TRACKRELAY_CONFIG", "TRACKRELAY_CORPUS", "TRACKRELAY_LOG_LEVEL"}
    for sec in fields(Config):
        if sec.name == "source":
            continue
        for f in fields(sec.default_factory()):
            known.add(f"{ENV_PREFIX}{sec.name.upper()}_{f.name.upper()}")
    for name in environ:
        if name.startswith(ENV_PREFIX) and name not in known:
            raise ConfigError(name, "unknown environment override")


def _from_env(text: str, default: Any, key: str) -> Any:
    if isinstance(default, tuple):
        text = text.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as e:
                raise ConfigError(key, f"invalid JSON list in environment: {e}") from None
        return [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(default, bool):
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(key, f"expected true or false, got {text!r}")
    return text


def _coerce(value: Any, default: Any, key: str, duration: bool) -> Any:
    if duration:
        if isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or not value:
                raise ConfigError(key, "expected a non-empty list of durations")
            return tuple(parse_duration(v, key) for v in value)
        return parse_duration(value, key)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(key, f"expected a whole number, got {value!r}") from None
        if isinstance(value, bool) or number < 0:
            raise ConfigError(key, f"expected a whole number >= 0, got {value!r}")
        return number
    if isinstance(default, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(key, f"expected a number, got {value!r}") from None
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(key, "expected a list of strings")
        return tuple(value)
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {value!r}")
    return type(default)(value) if isinstance(default, Secret) else value


def parse_listen(value: str, key: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port)."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", value.strip())
    if not m:
        raise ConfigError(key, f"expected HOST:PORT, got {value!r}")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if port > 65535:
        raise ConfigError(key, f"port out of range in {value!r}")
    return host, port


def _validate(cfg: Config) -> None:
    parse_listen(cfg.smtp.listen, "smtp.listen")
    if cfg.smtp.tls_listen:
        parse_listen(cfg.smtp.tls_listen, "smtp.tls_listen")
    parse_listen(cfg.http.listen, "http.listen")
    parse_listen(cfg.admin.listen, "admin.listen")
    if bool(cfg.smtp.tls_cert) != bool(cfg.smtp.tls_key):
        raise ConfigError("smtp.tls_cert", "set both smtp.tls_cert and smtp.tls_key, or neither")
    for key in ("tls_cert", "tls_key"):
        p = getattr(cfg.smtp, key)
        if p and not Path(p).is_file():
            raise ConfigError(f"smtp.{key}", f"file not found: {p}")
    if cfg.smtp.max_line_length < 1000:
        raise ConfigError("smtp.max_line_length", "must be at least 1000 (RFC 5321)")
    if cfg.smtp.sender_check not in ("address", "domain", "off"):
        raise ConfigError("smtp.sender_check", "expected address, domain or off")
    if cfg.smtp.from_check not in ("reject", "off"):
        raise ConfigError("smtp.from_check", "expected reject or off")
    for key, nets in (("smtp.trusted_networks", cfg.smtp.trusted_networks),
                      ("http.trusted_proxies", cfg.http.trusted_proxies)):
        for net in nets:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ConfigError(key, f"not a network: {net!r}") from None
    parse_upstream_url(cfg.upstream.url)
    if cfg.upstream.auth not in ("relay", "passthrough"):
        raise ConfigError("upstream.auth", "expected relay or passthrough")
    _check_public_url("http.public_url", cfg.http.public_url)
    _check_public_url("admin.public_url", cfg.admin.public_url)
    if parse_store_url(cfg.store.url).kind == "sqlite" and cfg.store.connections:
        raise ConfigError("store.connections", "only for a postgresql:// store.url (SQLite has one writer)")
    if cfg.tracking.default_mode not in ("always", "opt-in", "off"):
        raise ConfigError("tracking.default_mode", "expected always, opt-in or off")
    if cfg.tracking.pixel_position not in ("top", "bottom"):
        raise ConfigError("tracking.pixel_position", "expected top or bottom")
    if cfg.tracking.rewrite_timeout <= 0:
        raise ConfigError("tracking.rewrite_timeout", "must be more than 0")
    if cfg.privacy.consent not in ("none", "required"):
        raise ConfigError("privacy.consent", "expected none or required")
    if cfg.privacy.retention_days < 0:
        raise ConfigError("privacy.retention_days", "expected a number of days, 0 to keep forever")
    parse_clock_time(cfg.privacy.purge_time, "privacy.purge_time")
    disclosure = notice_problem(cfg.privacy.disclosure_text, cfg.privacy.disclosure_html)
    if disclosure:
        raise ConfigError(*disclosure)
    if cfg.notify.timeout <= 0:
        raise ConfigError("notify.timeout", "must be more than 0")
    if not cfg.notify.retry_intervals:
        raise ConfigError("notify.retry_intervals", "give at least one wait")
    if cfg.delivery.workers < 1:
        raise ConfigError("delivery.workers", "must be at least 1")
    if any(bool(getattr(cfg.dkim, k)) for k in ("domain", "selector", "key_file")):
        if not all(getattr(cfg.dkim, k) for k in ("domain", "selector", "key_file")):
            raise ConfigError("dkim", "set dkim.domain, dkim.selector and dkim.key_file together")
        _check_dkim_key(cfg.dkim)


def parse_clock_time(value: str, key: str) -> tuple[int, int]:
    """'HH:MM' (24 h) -> (hour, minute)."""
    m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", value.strip())
    if not m:
        raise ConfigError(key, f"expected HH:MM, got {value!r}")
    return int(m.group(1)), int(m.group(2))


def _check_dkim_key(dkim: DkimConfig) -> None:
    """A key that cannot sign would 451 every tracked mail until it bounces: refuse it at start."""
    from relay.dkim import DkimError, check_key  # dkimpy only for configs that sign

    try:
        pem = Path(dkim.key_file).read_bytes()
    except OSError as e:
        raise ConfigError("dkim.key_file", f"cannot read {dkim.key_file}: {e.strerror or e}") from None
    try:
        check_key(domain=dkim.domain, selector=dkim.selector, private_key=pem)
    except DkimError as e:
        raise ConfigError("dkim.key_file", f"cannot sign with it: {e}") from None


def _check_public_url(key: str, value: str) -> None:
    public = urlsplit(value)
    if public.scheme not in ("http", "https") or not public.netloc or public.query or public.fragment:
        raise ConfigError(key, f"expected http(s)://host[:port][/path], got {value!r}")


@dataclass(frozen=True)
class UpstreamTarget:
    kind: str  # "smtp", "starttls", "smtps" or "capture"
    host: str = ""
    port: int = 0


def parse_upstream_url(url: str) -> UpstreamTarget:
    if url.strip() == "capture:":
        return UpstreamTarget("capture")
    parts = urlsplit(url)
    kinds = {"smtp": ("smtp", 25), "smtp+starttls": ("starttls", 587), "smtps": ("smtps", 465)}
    if parts.scheme not in kinds or not parts.hostname:
        raise ConfigError("upstream.url", f"expected smtp://, smtp+starttls://, smtps:// or capture:, got {url!r}")
    kind, default_port = kinds[parts.scheme]
    try:
        port = parts.port or default_port
    except ValueError:
        raise ConfigError("upstream.url", f"bad port in {url!r}") from None
    return UpstreamTarget(kind, parts.hostname, port)


@dataclass(frozen=True)
class StoreTarget:
    kind: str  # "sqlite" or "postgresql"
    path: str = ""
    dsn: str = ""


def parse_store_url(url: str) -> StoreTarget:
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://"):]
        if not rest.startswith("/") or rest == "/":
            raise ConfigError("store.url", f"expected sqlite:///relative.db or sqlite:////absolute.db, got {url!r}")
        return StoreTarget("sqlite", path=rest[1:])
    if url.startswith(("postgresql://", "postgres://")):
        return StoreTarget("postgresql", dsn=url)
    raise ConfigError("store.url", f"expected sqlite:///PATH or postgresql://..., got {url!r}")
