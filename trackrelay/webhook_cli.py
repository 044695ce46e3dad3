"""`trackrelay webhook add|list|del|test`: the same webhooks as /api/v1/webhooks."""
from __future__ import annotations

import argparse
import secrets
import time
from typing import Any

from relay.notify_payloads import render
from relay.notify_rules import sample_event
from relay.store import Store
from relay.webhook_spec import format_duration, parse_spec
from relay.webhook_target import Refused, check_url, resolve_and_check


def add_parser(verbs: Any, common: argparse.ArgumentParser) -> None:
    hook = verbs.add_parser("webhook", help="a user's webhooks").add_subparsers(dest="action", required=True)
    add = hook.add_parser("add", parents=[common])
    add.add_argument("email")
    add.add_argument("url")
    add.add_argument("--kind", default="json", help="json, slack, mattermost, discord, teams or googlechat")
    add.add_argument("--events", default="open,click", help="comma-separated: open, click, unopened")
    add.add_argument("--all-classes", action="store_true", help="also machine hits (humans_only off)")
    add.add_argument("--every-open", action="store_true", help="every human open, not only the first (first_only off)")
    add.add_argument("--unopened-after", default="3d")
    add.add_argument("--digest", default="", help='a period such as "15m": one summary per period')
    add.set_defaults(handler=_add)
    listing = hook.add_parser("list", parents=[common])
    listing.add_argument("email", nargs="?")
    listing.set_defaults(handler=_list)
    for action, handler in (("del", _delete), ("test", _test)):
        one = hook.add_parser(action, parents=[common])
        one.add_argument("id", type=int)
        one.set_defaults(handler=handler)


async def _add(store: Store, args: Any) -> int:
    user = await store.user_by_email(args.email)
    if user is None:
        raise ValueError(f"no such user: {args.email}")
    spec = parse_spec({"url": args.url, "kind": args.kind, "events": args.events, "humans_only": not args.all_classes,
                       "first_only": not args.every_open, "unopened_after": args.unopened_after,
                       "digest": args.digest})
    target = check_url(spec.url)
    assert not isinstance(target, Refused)  # parse_spec checked it
    found = await resolve_and_check(target.host, target.port, args.cfg.notify.allow_private_targets)
    if isinstance(found, Refused):
        raise ValueError(f"url: {found.reason}")
    secret = "whsec_" + secrets.token_urlsafe(32) if spec.kind == "json" else ""
    hook = await store.add_webhook(user.id, spec, secret, time.time())
    print(f"added webhook {hook.id}" + (f" secret: {secret}" if secret else ""))
    return 0


async def _list(store: Store, args: Any) -> int:
    owner = None
    if args.email:
        user = await store.user_by_email(args.email)
        if user is None:
            raise ValueError(f"no such user: {args.email}")
        owner = user.id
    emails = {u.id: u.email for u in await store.users()}
    for w in await store.webhooks(owner):
        s = w.spec
        flags = [f"events={','.join(s.events)}", f"humans_only={s.humans_only}", f"first_only={s.first_only}"]
        if s.digest:
            flags.append(f"digest={format_duration(s.digest)}")
        print(f"{w.id}  {emails.get(w.user_id, '?')}  {s.kind}  {s.url}  {' '.join(flags)}"
              f"{'' if s.enabled else '  disabled'}")
    return 0


async def _delete(store: Store, args: Any) -> int:
    if not await store.delete_webhook(args.id, None):
        raise ValueError(f"no such webhook: {args.id}")
    print(f"deleted webhook {args.id}")
    return 0


async def _test(store: Store, args: Any) -> int:
    hook = await store.webhook(args.id, None)
    if hook is None:
        raise ValueError(f"no such webhook: {args.id}")
    from relay import webhook_client  # aiohttp: paid for by this verb only

    now = time.time()
    body, headers = render(hook.spec.kind, sample_event(now), secret=hook.secret, t=int(now))
    result = await webhook_client.post(hook.spec.url, body, headers, timeout=args.cfg.notify.timeout,
                                       allow_private=args.cfg.notify.allow_private_targets)
    print(f"{'delivered' if result.delivered else 'failed'}: status {result.status}, "
          f"{result.latency * 1000:.0f} ms{', ' + result.error if result.error else ''}")
    return 0 if result.delivered else 1
