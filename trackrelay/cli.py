"""The `trackrelay` command. Every verb takes -c/--config; errors are one line and a non-zero exit."""
from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import secrets
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Awaitable, Callable

import uvloop
from email_validator import EmailNotValidError, validate_email

from relay import config as config_mod
from relay import config_template
from relay.auth import hash_password, new_api_token, token_hash
from relay.config import PARTS, Config
from relay.errors import ConfigError, TrackrelayError
from relay.policy import UserPolicy, parse_policy_updates
from relay.store import Store, open_store
from trackrelay import privacy_cli, webhook_cli

log = logging.getLogger("trackrelay")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    default_level = "INFO" if args.verb == "serve" else "WARNING"  # admin verbs print only their answer
    logging.basicConfig(level=os.environ.get("TRACKRELAY_LOG_LEVEL", default_level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.verb == "init":
            return _init(args)
        if args.verb == "migrate-store":
            return asyncio.run(_migrate_store(args))
        cfg = config_mod.load(config_mod.config_path(args.config, os.environ))
        if args.verb == "check-config":
            print(f"config ok ({cfg.source})")
            return 0
        if args.verb == "serve":
            # uvloop: the same asyncio API, about a fifth more mail and hits per second
            return uvloop.run(_serve(cfg, args))
        args.cfg = cfg  # for the verbs that act on the network (webhook test) as the relay would
        return asyncio.run(_with_store(cfg, args.handler, args))
    except (TrackrelayError, ValueError) as e:
        print(f"trackrelay: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trackrelay", description="SMTP relay with open and click tracking")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", help="TOML config file (default: $TRACKRELAY_CONFIG or ./trackrelay.toml)")
    verbs = p.add_subparsers(dest="verb", required=True)

    serve = verbs.add_parser("serve", parents=[common], help="run the relay")
    serve.add_argument("--only", choices=PARTS, action="append",
                       help="run only this part (repeat for several in one process; scale-out)")
    # set by `serve` for its delivery process: wake and stop through stdin, report on stdout
    serve.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    init = verbs.add_parser("init", parents=[common], help="write a commented config with fresh secrets")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    verbs.add_parser("check-config", parents=[common], help="validate the config and exit")

    user = verbs.add_parser("user", help="manage users").add_subparsers(dest="action", required=True)
    add = user.add_parser("add", parents=[common])
    add.add_argument("email")
    add.add_argument("--admin", action="store_true")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.set_defaults(handler=_user_add)
    user.add_parser("list", parents=[common]).set_defaults(handler=_user_list)
    passwd = user.add_parser("passwd", parents=[common])
    passwd.add_argument("email")
    passwd.add_argument("--password-stdin", action="store_true")
    passwd.set_defaults(handler=_user_passwd)
    delete = user.add_parser("del", parents=[common], help="remove a user and their mail")
    delete.add_argument("email")
    delete.add_argument("--erase", action="store_true",
                        help="also the capture upstream's copies of their mail, gone from the store files")
    delete.set_defaults(handler=_user_del)

    token = verbs.add_parser("token", help="API tokens").add_subparsers(dest="action", required=True)
    create = token.add_parser("create", parents=[common])
    create.add_argument("email")
    create.add_argument("--name", default="cli", help="shown in the token list (default: cli)")
    create.set_defaults(handler=_token_create)

    policy = verbs.add_parser("policy", help="a user's tracking policy").add_subparsers(dest="action", required=True)
    show = policy.add_parser("show", parents=[common])
    show.add_argument("email")
    show.set_defaults(handler=_policy_show)
    put = policy.add_parser("set", parents=[common])
    put.add_argument("email")
    put.add_argument("pairs", nargs="+", metavar="KEY=VALUE", help="mode=always|opt-in|off, opens=, clicks=, notify=, sticky=")
    put.set_defaults(handler=_policy_set)
    privacy_cli.add_parsers(verbs, common)
    webhook_cli.add_parser(verbs, common)
    move = verbs.add_parser("migrate-store", help="copy every user, message and event into another (empty) store")
    move.add_argument("--from", dest="source", required=True, metavar="URL", help="e.g. sqlite:///var/trackrelay.db")
    move.add_argument("--to", dest="target", required=True, metavar="URL", help="e.g. postgresql://user:pw@host/db")
    move.add_argument("--json", action="store_true", help="only a JSON summary")
    return p


async def _migrate_store(args: Any) -> int:
    from trackrelay.migrate import copy_store, summary

    on_terminal = sys.stderr.isatty() and not args.json

    def progress(table: str, rows: int) -> None:
        if on_terminal:
            print(f"\rcopying {table}: {rows} rows\033[K", end="", file=sys.stderr, flush=True)

    source, target = open_store(args.source), open_store(args.target)
    await source.open()
    try:
        await target.open()
        try:
            copied = await copy_store(source, target, progress)
        finally:
            await target.close()
    finally:
        await source.close()
    if on_terminal:
        print("\r\033[K", end="", file=sys.stderr)
    if args.json:
        print(json.dumps({"copied": copied}))
    else:
        print(f"{summary(copied)} from {source.location} to {target.location}")
    return 0


async def _serve(cfg: Config, args: Any) -> int:
    from trackrelay.app import App  # the servers' imports are only paid for by `serve`

    only = args.only
    if args.child:
        return await _serve_as_child(App(cfg, args.only))
    # the child delivers mail and sends webhooks, off the loop that answers SMTP and hits, so
    # neither waits for that loop under a flood of hits
    child = [sys.executable, "-m", "trackrelay.cli", "serve", "--only", "delivery", "--only", "notify", "--child"]
    app = App(cfg, only, delivery_command=child + (["-c", args.config] if args.config else []))
    # before starting: a SIGTERM while the delivery process starts (listeners are up) is a clean stop
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    if "admin" in app.parts:
        first = await app.ensure_first_admin()
        if first:
            print(f"first admin: {first[0]} password: {first[1]}", flush=True)
    for name in app.servers:
        sock = app.servers[name].sockets[0].getsockname()
        log.info("%s listening on %s:%s", name, sock[0], sock[1])
    log.info("trackrelay running (%s); store %s", ", ".join(app.parts), cfg.store.url.split("@")[-1])
    await stop.wait()
    log.info("shutting down")
    await app.stop()
    return 0


async def _serve_as_child(app: Any) -> int:
    from relay.delivery_process import serve_parent

    await app.start()
    await serve_parent(app.delivery.wake, lambda: {**app.delivery.counts, **app.notify.counts}, app.stop)
    return 0


async def _with_store(cfg: Config, handler: Callable[[Store, Any], Awaitable[int]], args: Any) -> int:
    store = open_store(cfg.store.url, cfg.store.connections)
    await store.open()
    try:
        return await handler(store, args)
    finally:
        await store.close()


def _read_password(args: Any) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
    if len(password) < 8:
        raise ValueError("password: at least 8 characters")
    return password


async def _need_user(store: Store, email: str):
    user = await store.user_by_email(email)
    if user is None:
        raise ValueError(f"no such user: {email}")
    return user


async def _user_add(store: Store, args: Any) -> int:
    try:
        validate_email(args.email, check_deliverability=False)
    except EmailNotValidError as e:
        raise ValueError(f"not an email address: {args.email} ({e})") from None
    if await store.user_by_email(args.email):
        raise ValueError(f"user exists: {args.email}")
    password = _read_password(args)
    user = await store.add_user(args.email, await asyncio.to_thread(hash_password, password), args.admin)
    print(f"added {user.email}{' (admin)' if user.is_admin else ''}")
    return 0


async def _user_list(store: Store, args: Any) -> int:
    for user in await store.users():
        print(f"{user.email}{'  admin' if user.is_admin else ''}")
    return 0


async def _user_passwd(store: Store, args: Any) -> int:
    await _need_user(store, args.email)
    password = _read_password(args)
    await store.set_password(args.email, await asyncio.to_thread(hash_password, password))
    print(f"password changed for {args.email.lower()}")
    return 0


async def _user_del(store: Store, args: Any) -> int:
    erased = await privacy_cli.erase_user(store, args, (await _need_user(store, args.email)).id) if args.erase else 0
    if not await store.delete_user(args.email):
        raise ValueError(f"no such user: {args.email}")
    print(f"deleted {args.email.lower()}" + (f", {erased} messages erased" if args.erase else ""))
    return 0


async def _token_create(store: Store, args: Any) -> int:
    user = await _need_user(store, args.email)
    token = new_api_token()
    await store.add_api_token(user.id, token_hash(token), args.name)
    print(token)
    return 0


async def _policy_show(store: Store, args: Any) -> int:
    user = await _need_user(store, args.email)
    policy = await store.policy(user.id) or UserPolicy()
    for key, value in asdict(policy).items():
        print(f"{key} = {value}")
    return 0


async def _policy_set(store: Store, args: Any) -> int:
    user = await _need_user(store, args.email)
    pairs = {}
    for pair in args.pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
        pairs[key.strip()] = value.strip()
    policy = parse_policy_updates(await store.policy(user.id) or UserPolicy(), pairs)
    await store.set_policy(user.id, policy)
    return await _policy_show(store, args)


def _init(args: Any) -> int:
    path = Path(args.config or os.environ.get("TRACKRELAY_CONFIG") or config_mod.DEFAULT_FILE)
    if path.exists() and not args.force:
        raise ConfigError(str(path), "exists; use --force to overwrite")
    path.write_text(config_template.render(lambda: secrets.token_urlsafe(32)), encoding="utf-8")
    path.chmod(0o600)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
