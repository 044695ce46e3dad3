"""Wiring: the only place that knows every part. Starts what `--only` asks for, stops it cleanly."""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from admin import make_admin_app
from admin.keys import AdminSettings
from admin.ops import register_child_notify_metrics, register_mail_metrics, register_notify_metrics
from relay.auth import hash_password, new_password
from relay.config import PARTS, Config, parse_clock_time, parse_listen, parse_upstream_url
from relay.delivery import DeliverySettings, DeliveryWorker
from relay.delivery_process import DeliveryProcess
from relay.errors import StartupError
from relay.hit_recorder import HitRecorder, RecorderSettings
from relay.hit_tracker import HitTracker, TrackerSettings
from relay.http_hits import HitsServer, HttpLimits
from relay.intake import TrackingRules
from relay.rewrite_pool import RewritePool
from relay.metrics import Metrics
from relay.notify import NotifySettings, NotifyWorker
from relay.purger import Purger
from relay.netaddr import parse_networks
from relay.optout import OptOut
from relay.credentials import Credentials
from relay.smtpd import RelayHandler, SmtpPolicy, start_listener
from relay.store import Store, open_store
from relay.tlsutil import self_signed, server_context
from relay.upstream import CaptureUpstream, SmtpUpstream, Upstream
from relay.webserver import listen, start_runner

log = logging.getLogger(__name__)
FIRST_ADMIN = "admin@localhost"


def state_dir(cfg: Config) -> Path:
    """Where generated files live: beside the SQLite file, else ./var."""
    if cfg.store.url.startswith("sqlite:///"):
        return Path(cfg.store.url[len("sqlite:///"):]).parent
    return Path("var")


class App:
    """only: the parts to run (one name or several; None: all). delivery_command: how to start
    `serve --only delivery` as a child process; given, a full `serve` runs delivery there
    (unless the config says otherwise), else on its own loop."""

    def __init__(self, cfg: Config, only: str | Sequence[str] | None = None, *,
                 clock: Callable[[], float] = time.time, store: Store | None = None,
                 delivery_command: Sequence[str] | None = None) -> None:
        self.cfg = cfg
        chosen = {only} if isinstance(only, str) else set(only or PARTS)
        self.parts = tuple(part for part in PARTS if part in chosen)
        self.delivery_command = delivery_command if (
            not only and cfg.delivery.separate_process and cfg.upstream.auth != "passthrough") else None
        self.clock = clock
        self.store = store or open_store(cfg.store.url, cfg.store.connections)
        self.credentials = Credentials()
        self.servers: dict[str, asyncio.base_events.Server] = {}
        # in this process, or a child process with the same wake(), counts and stop()
        self.delivery: DeliveryWorker | DeliveryProcess | None = None
        self.upstream: Upstream | None = None
        self.handler: RelayHandler | None = None
        self.metrics = Metrics()
        self.recorder: HitRecorder | None = None
        self.hits: HitTracker | None = None
        self.notify: NotifyWorker | None = None
        self._tasks: list[asyncio.Task] = []
        self._cleanups: list[Callable[[], Any]] = []
        self._stopped = False

    def port(self, name: str) -> int:
        return self.servers[name].sockets[0].getsockname()[1]

    async def start(self) -> None:
        if self.cfg.upstream.auth == "passthrough" and len({"smtp", "delivery"} & set(self.parts)) == 1:
            # the users' passwords live in the memory of the process that took their login
            raise StartupError("upstream.auth = \"passthrough\" needs smtp and delivery in one process: "
                               "run serve without --only smtp|delivery")
        await self.store.open()
        try:
            if "delivery" in self.parts and not self.delivery_command:
                self._start_delivery()
            if "notify" in self.parts and not self.delivery_command:  # else: it runs in the child too
                self._start_notify()
            if "smtp" in self.parts:
                await self._start_smtp()
            if "hits" in self.parts:
                await self._start_hits()
            if "admin" in self.parts:
                await self._start_admin()
            if "delivery" in self.parts and self.delivery_command:  # last: a taken port fails first
                self.delivery = DeliveryProcess(self.delivery_command)
                await self.delivery.start()
        except BaseException:
            await self.stop()
            raise

    async def ensure_first_admin(self) -> tuple[str, str] | None:
        """On a store without users, create an admin; returns (email, password) once."""
        if await self.store.users():
            return None
        password = new_password()
        await self.store.add_user(FIRST_ADMIN, await asyncio.to_thread(hash_password, password), is_admin=True)
        return FIRST_ADMIN, password

    def _start_delivery(self) -> None:
        cfg = self.cfg
        target = parse_upstream_url(cfg.upstream.url)
        if target.kind == "capture":
            self.upstream = CaptureUpstream(self.store)
        else:
            self.upstream = SmtpUpstream(target, username=cfg.upstream.username,
                                         password=cfg.upstream.password, timeout=cfg.upstream.timeout,
                                         pool_size=cfg.upstream.pool_size, ca_file=cfg.upstream.ca_file)
        dkim_key = Path(cfg.dkim.key_file).read_bytes() if cfg.dkim.key_file else b""
        settings = DeliverySettings(
            retry_intervals=cfg.delivery.retry_intervals, max_age=cfg.delivery.max_age,
            workers=cfg.delivery.workers, public_url=cfg.http.public_url, hostname=cfg.smtp.hostname,
            pixel_position=cfg.tracking.pixel_position, passthrough=cfg.upstream.auth == "passthrough",
            dkim_domain=cfg.dkim.domain, dkim_selector=cfg.dkim.selector, dkim_key=dkim_key,
            dkim_resign=cfg.dkim.resign, disclosure_text=cfg.privacy.disclosure_text,
            disclosure_html=cfg.privacy.disclosure_html, optout_link=cfg.privacy.optout_link,
            # alone (--only delivery) nothing wakes it when mail is spooled: look more often
            poll=1.0 if "smtp" in self.parts else 0.2,
        )
        rewriter = RewritePool(cfg.tracking.rewrite_processes, cfg.tracking.rewrite_timeout)
        self._cleanups.append(rewriter.close)
        self.delivery = DeliveryWorker(self.store, self.upstream, settings, credentials=self.credentials,
                                       clock=self.clock, rewriter=rewriter)
        self._tasks.append(asyncio.create_task(self.delivery.run(), name="delivery"))
        if cfg.privacy.retention_days:  # beside delivery: one such role per deployment, usually
            purger = Purger(self.store, cfg.privacy.retention_days,
                            parse_clock_time(cfg.privacy.purge_time, "privacy.purge_time"), clock=self.clock)
            self._tasks.append(asyncio.create_task(purger.run(), name="purge"))

    def _start_notify(self) -> None:
        cfg = self.cfg.notify
        settings = NotifySettings(retry_intervals=cfg.retry_intervals, max_age=cfg.max_age, timeout=cfg.timeout,
                                  allow_private=cfg.allow_private_targets, panel_url=self.cfg.admin.public_url,
                                  # alone (--only notify) nothing wakes it after a hit batch: look more often
                                  poll=1.0 if "hits" in self.parts else 0.2,
                                  # a claim outlives its attempt however long notify.timeout is
                                  lease=max(120.0, 4 * cfg.timeout))
        self.notify = NotifyWorker(self.store, settings, self.metrics, clock=self.clock)
        self._tasks.append(asyncio.create_task(self.notify.run(), name="notify"))

    async def _start_smtp(self) -> None:
        # aiosmtpd logs every command at INFO: recipients' addresses (which logs must not
        # hold, README "Privacy") and about 8% of the relay's CPU under load
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        cfg = self.cfg.smtp
        policy = SmtpPolicy(
            hostname=cfg.hostname, max_message_size=cfg.max_message_size, max_line_length=cfg.max_line_length,
            trusted_networks=parse_networks(cfg.trusted_networks), sender_check=cfg.sender_check,
            rate_limit_per_minute=cfg.rate_limit_per_minute, max_recipients=cfg.max_recipients,
            auth_failures_per_5_minutes=cfg.auth_failures_per_5_minutes, from_check=cfg.from_check,
            tracking=TrackingRules(
                default_mode=self.cfg.tracking.default_mode,
                internal_domains=frozenset(d.lower() for d in self.cfg.tracking.internal_domains),
                max_split=self.cfg.tracking.max_split,
                consent_required=self.cfg.privacy.consent == "required",
            ),
        )
        self.handler = RelayHandler(self.store, policy, on_spooled=self._wake_delivery,
                                    credentials=self.credentials, clock=self.clock)
        if cfg.tls_cert:
            cert, key = cfg.tls_cert, cfg.tls_key
        else:
            cert_path, key_path = await asyncio.to_thread(self_signed, cfg.hostname, state_dir(self.cfg) / "tls")
            cert, key = str(cert_path), str(key_path)
        tls = server_context(cert, key)
        self.servers["smtp"] = await _listen("smtp.listen", cfg.listen, lambda h, p: start_listener(
            self.handler, h, p, tls=tls, implicit_tls=False, policy=policy))
        if cfg.tls_listen:
            self.servers["smtps"] = await _listen("smtp.tls_listen", cfg.tls_listen, lambda h, p: start_listener(
                self.handler, h, p, tls=tls, implicit_tls=True, policy=policy))

    async def _start_hits(self) -> None:
        cfg = self.cfg
        self.recorder = HitRecorder(self.store, self.metrics, RecorderSettings(max_queue=cfg.http.hit_queue_size),
                                    on_recorded=self._wake_notify)
        self.recorder.start()
        self.hits = HitTracker(self.store, self.recorder, self.metrics, TrackerSettings(
            anonymize_ip=cfg.privacy.anonymize_ip, machine_window=cfg.tracking.machine_window), clock=self.clock)
        limits = HttpLimits(max_connections=cfg.http.max_connections,
                            max_connections_per_ip=cfg.http.max_connections_per_ip)
        optout = OptOut(self.store, self.hits.target, self.metrics, cfg.http.public_url)
        server = HitsServer(self.hits, parse_networks(cfg.http.trusted_proxies), limits, self.metrics, optout)
        # cleanups run last-first: connections end, pending look-ups finish, the queue is
        # flushed - all before the store closes
        self._cleanups += [self.recorder.close, self.hits.close, server.close]
        # SO_REUSEPORT: several `serve --only hits` processes may share the public port
        self.servers["hits"] = await _listen("http.listen", cfg.http.listen,
                                             lambda h, p: listen(server.protocol, h, p, reuse_port=True))

    async def _start_admin(self) -> None:
        register_mail_metrics(self.metrics, self.store,
                              accepted=lambda: self.handler.accepted if self.handler else 0,
                              results=lambda: self.delivery.counts if self.delivery else {})
        register_notify_metrics(self.metrics, self.store)
        if "notify" in self.parts and self.delivery_command:  # notify runs in the child
            register_child_notify_metrics(self.metrics, lambda: self.delivery.counts if self.delivery else {})
        settings = AdminSettings(admins_see_all=self.cfg.admin.admins_see_all,
                                 default_mode=self.cfg.tracking.default_mode,
                                 secret_key=self.cfg.admin.secret_key,
                                 https=urlsplit(self.cfg.admin.public_url).scheme == "https",
                                 trusted_proxies=parse_networks(self.cfg.http.trusted_proxies),
                                 login_attempts_per_minute=self.cfg.admin.login_attempts_per_minute,
                                 allow_private_targets=self.cfg.notify.allow_private_targets,
                                 webhook_timeout=self.cfg.notify.timeout, panel_url=self.cfg.admin.public_url,
                                 privacy=self.cfg.privacy)
        runner = await start_runner(make_admin_app(self.store, self.metrics, settings, clock=self.clock))
        self._cleanups.append(runner.cleanup)
        self.servers["admin"] = await _listen("admin.listen", self.cfg.admin.listen,
                                              lambda h, p: listen(runner.server, h, p))

    def _wake_notify(self) -> None:
        if self.notify:
            self.notify.wake()

    def _wake_delivery(self) -> None:
        # a method, not the worker's own: the delivery process starts after the SMTP listener
        if self.delivery:
            self.delivery.wake()

    async def stop(self) -> None:
        """Stop accepting, finish or release claimed deliveries, flush, close the store."""
        if self._stopped:
            return
        self._stopped = True
        for server in self.servers.values():
            server.close()
        for server in self.servers.values():
            await server.wait_closed()
        if self.delivery:
            await self.delivery.stop()
        if self.notify:
            self.notify.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for cleanup in reversed(self._cleanups):
            result = cleanup()
            if asyncio.iscoroutine(result):
                await result
        if self.upstream:
            await self.upstream.close()
        await self.store.close()


async def _listen(key: str, value: str, start: Callable[[str, int], Any]) -> asyncio.base_events.Server:
    host, port = parse_listen(value, key)
    try:
        return await start(host, port)
    except OSError as e:
        raise StartupError(f"{key}: cannot listen on {value}: {e.strerror or e}") from None
