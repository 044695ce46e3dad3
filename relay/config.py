"""Configuration: one TOML file plus TRACKRELAY_<SECTION>_<KEY> overrides, validated once.

Each part of the relay receives its own frozen section, never the whole thing.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from relay.errors import ConfigError

ENV_PREFIX = "TRACKRELAY_"
# the parts `trackrelay serve` runs; each also runs alone with --only PART
PARTS = ("smtp", "delivery", "hits", "admin")
DEFAULT_FILE = "trackrelay.toml"


class Secret(str):
    """A string that keeps out of logs and reprs."""

    def __repr__(self) -> str:
        return "Secret('***')" if self else "Secret('')"


@dataclass(frozen=True)
class SmtpConfig:
    listen: str = "127.0.0.1:2525"
    tls_listen: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    hostname: str = field(default_factory=socket.getfqdn)
    max_message_size: int = 36700160
    max_line_length: int = 8192
    trusted_networks: tuple[str, ...] = ()
    # MAIL FROM must be the authenticated user's own address (or in their domain if "domain").
    sender_check: str = "address"
    rate_limit_per_minute: int = 600
    max_recipients: int = 1000
    # failed AUTH attempts per client address in 5 minutes before AUTH is refused (0: no limit)
    auth_failures_per_5_minutes: int = 10


@dataclass(frozen=True)
class UpstreamConfig:
    url: str = "capture:"
    username: str = ""
    password: Secret = Secret("")
    auth: str = "relay"
    timeout: float = 60.0
    # upstream connections kept open and reused
    pool_size: int = 20
    # CA bundle to verify the upstream's certificate (empty: the system's CAs)
    ca_file: str = ""


@dataclass(frozen=True)
class HttpConfig:
    listen: str = "127.0.0.1:8080"
    public_url: str = "http://127.0.0.1:8080"
    trusted_proxies: tuple[str, ...] = ()
    hit_queue_size: int = 100000
    # open connections per hits process, and per client address (the TCP peer; addresses in
    # trusted_proxies are not capped); over either a new connection is closed at once (0: no cap)
    max_connections: int = 10000
    max_connections_per_ip: int = 256


@dataclass(frozen=True)
class AdminConfig:
    listen: str = "127.0.0.1:8081"
    admins_see_all: bool = False
    secret_key: Secret = Secret("")


@dataclass(frozen=True)
class StoreConfig:
    url: str = "sqlite:///var/trackrelay.db"


@dataclass(frozen=True)
class TrackingConfig:
    default_mode: str = "opt-in"
    internal_domains: tuple[str, ...] = ()
    max_split: int = 50
    pixel_position: str = "bottom"
    machine_window: float = 10.0
    # worker processes that rewrite mail, so SMTP intake keeps its core (0: on the event loop);
    # with one, tracked mail queued for it under load (140 ms a message at 250 msg/s)
    rewrite_processes: int = 2


@dataclass(frozen=True)
class DeliveryConfig:
    retry_intervals: tuple[float, ...] = (60.0, 300.0, 900.0, 3600.0, 14400.0)
    max_age: float = 5 * 86400.0
    workers: int = 60  # messages in flight (claimed, rewritten, sending); upstream.pool_size caps connections
    # `serve` runs delivery in a child process of its own, so intake and delivery each get a core
    # (never with upstream.auth = "passthrough": the passwords are in the SMTP process's memory)
    separate_process: bool = True


@dataclass(frozen=True)
class NotifyConfig:
    allow_private_targets: bool = False
    retry_intervals: tuple[float, ...] = (10.0, 60.0, 300.0, 1800.0, 7200.0, 21600.0)


@dataclass(frozen=True)
class PrivacyConfig:
    anonymize_ip: bool = True
    consent: str = "none"
    retention_days: int = 365


@dataclass(frozen=True)
class DkimConfig:
    domain: str = ""
    selector: str = ""
    key_file: str = ""
    # rewrite mail a client already signed, then sign it again with our key
    resign: bool = False


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
    ("delivery", "retry_intervals"),
    ("delivery", "max_age"),
    ("notify", "retry_intervals"),
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
    public = urlsplit(cfg.http.public_url)
    if public.scheme not in ("http", "https") or not public.netloc or public.query or public.fragment:
        raise ConfigError("http.public_url", f"expected http(s)://host[:port][/path], got {cfg.http.public_url!r}")
    parse_store_url(cfg.store.url)
    if cfg.tracking.default_mode not in ("always", "opt-in", "off"):
        raise ConfigError("tracking.default_mode", "expected always, opt-in or off")
    if cfg.tracking.pixel_position not in ("top", "bottom"):
        raise ConfigError("tracking.pixel_position", "expected top or bottom")
    if cfg.privacy.consent not in ("none", "required"):
        raise ConfigError("privacy.consent", "expected none or required")
    if cfg.delivery.workers < 1:
        raise ConfigError("delivery.workers", "must be at least 1")
    if any(bool(getattr(cfg.dkim, k)) for k in ("domain", "selector", "key_file")):
        if not all(getattr(cfg.dkim, k) for k in ("domain", "selector", "key_file")):
            raise ConfigError("dkim", "set dkim.domain, dkim.selector and dkim.key_file together")
        if not Path(cfg.dkim.key_file).is_file():
            raise ConfigError("dkim.key_file", f"file not found: {cfg.dkim.key_file}")


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
