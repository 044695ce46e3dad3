"""/settings: a user's own tracking policy, API tokens, webhooks, password, language and time
zone. The same rules as the JSON API (admin/api.py, tokens_api.py, webhooks_api.py); the
values shown once (a new token, a webhook's signing secret) are rendered straight into the
answer to the POST that made them, never put in a URL or stored."""
from __future__ import annotations

from typing import Any
from zoneinfo import available_timezones

import aiohttp_jinja2
from aiohttp import web

from admin.api import int_id
from admin.i18n import N_, _
from admin.keys import SETTINGS, STORE
from admin.panel import form_field, login_required, page_context, posted, see_other
from admin.sessions import PANEL_USER
from admin.tokens_api import MAX_NAME
from admin.webhooks_api import add_webhook, checked_spec, send_sample
from relay.auth import hash_password, new_api_token, token_hash, verify_password_async
from relay.notify_payloads import KINDS
from relay.policy import UserPolicy, parse_policy_updates
from relay.records import UserChanges
from relay.webhook_spec import format_duration

PAGE = "/settings"
LANGUAGES = {"": "", "en": "English", "hu": "Magyar"}  # "": the browser's (said in the template)
ZONES = sorted(available_timezones())
MIN_PASSWORD = 8
# what a redirect back to the page says it did (?done=KEY)
DONE = {"policy": N_("Tracking policy saved."), "preferences": N_("Preferences saved."),
        "token": N_("Token revoked."), "webhook": N_("Webhook deleted.")}


def add_routes(app: web.Application) -> None:
    app.router.add_get(PAGE, settings_page)
    app.router.add_post(PAGE + "/policy", save_policy)
    app.router.add_post(PAGE + "/preferences", save_preferences)
    app.router.add_post(PAGE + "/password", change_password)
    app.router.add_post(PAGE + "/tokens", create_token)
    app.router.add_post(PAGE + "/tokens/{id}/delete", delete_token)
    app.router.add_post(PAGE + "/webhooks", create_webhook)
    app.router.add_post(PAGE + "/webhooks/{id}/test", test_webhook)
    app.router.add_post(PAGE + "/webhooks/{id}/delete", delete_webhook)


async def render(request: web.Request, *, status: int = 200, **shown: Any) -> web.Response:
    """The settings page; `shown`: a notice, an error, or a value shown this once."""
    store, user = request.app[STORE], request[PANEL_USER]
    policy = await store.policy(user.id) or UserPolicy(mode=request.app[SETTINGS].default_mode)
    hooks = await store.webhooks(user.id)
    deliveries = {h.id: await store.deliveries(h.id, limit=5) for h in hooks}
    done = request.query.get("done", "")
    context = page_context(
        request, title=_("Settings"), policy=policy, tokens=await store.api_tokens(user.id), webhooks=hooks,
        deliveries=deliveries, kinds=KINDS, languages=LANGUAGES, zones=ZONES, duration=format_duration,
        notice=_(DONE[done]) if done in DONE else "", error="", new_token=None, new_secret=None, tested=None)
    context.update(shown)
    return aiohttp_jinja2.render_template("settings.html", request, context, status=status)


@login_required
async def settings_page(request: web.Request) -> web.Response:
    return await render(request)


@login_required
async def save_policy(request: web.Request) -> web.StreamResponse:
    form = await posted(request)
    store, user = request.app[STORE], request[PANEL_USER]
    current = await store.policy(user.id) or UserPolicy(mode=request.app[SETTINGS].default_mode)
    changes = {"mode": form_field(form, "mode"),
               **{k: "true" if form_field(form, k) == "1" else "false" for k in ("opens", "clicks", "notify", "sticky")}}
    try:
        policy = parse_policy_updates(current, changes)
    except ValueError as e:  # the API's validator: its English detail, said in a sentence of the page's language
        return await render(request, status=400, error=_("The policy was not saved: %(reason)s", reason=str(e)))
    await store.set_policy(user.id, policy)
    return see_other(PAGE + "?done=policy#policy")


@login_required
async def save_preferences(request: web.Request) -> web.StreamResponse:
    form = await posted(request)
    language, zone = form_field(form, "language"), form_field(form, "timezone").strip()
    if language not in LANGUAGES:
        return await render(request, status=400, error=_("Choose a language from the list."))
    if zone and zone not in ZONES:
        return await render(request, status=400, error=_("Unknown time zone %(zone)s (e.g. Europe/Budapest).", zone=repr(zone)))
    await request.app[STORE].update_user(request[PANEL_USER].email, UserChanges(language=language, timezone=zone))
    return see_other(PAGE + "?done=preferences#preferences")


@login_required
async def change_password(request: web.Request) -> web.StreamResponse:
    """A new password ends every session of the user, this one too: they log in again."""
    form = await posted(request)
    store = request.app[STORE]
    user = await store.user_by_email(request[PANEL_USER].email)
    new = form_field(form, "new_password")
    if user is None or not await verify_password_async(user.password_hash, form_field(form, "current_password")):
        return await render(request, status=400, error=_("The current password is wrong."))
    if len(new) < MIN_PASSWORD or new != form_field(form, "repeat_password"):
        return await render(request, status=400,
                            error=_("The new password needs at least %(n)s characters, typed twice the same.", n=MIN_PASSWORD))
    await store.set_password(user.email, hash_password(new))
    return see_other("/login")


@login_required
async def create_token(request: web.Request) -> web.StreamResponse:
    form = await posted(request)
    name = form_field(form, "name").strip()
    if not name or len(name) > MAX_NAME:
        return await render(request, status=400, error=_("A token needs a name of at most %(n)s characters.", n=MAX_NAME))
    value = new_api_token()
    await request.app[STORE].add_api_token(request[PANEL_USER].id, token_hash(value), name)
    return await render(request, new_token=value, notice=_("Token “%(name)s” created: copy it now, it is shown once.", name=name))


@login_required
async def delete_token(request: web.Request) -> web.StreamResponse:
    await posted(request)
    if not await request.app[STORE].delete_api_token(request[PANEL_USER].id, int_id(request)):
        raise web.HTTPNotFound()
    return see_other(PAGE + "?done=token#tokens")


@login_required
async def create_webhook(request: web.Request) -> web.StreamResponse:
    form = await posted(request)
    body = {"url": form_field(form, "url").strip(), "kind": form_field(form, "kind"),
            "events": [e for e in ("open", "click", "unopened") if form_field(form, "event_" + e) == "1"],
            "humans_only": form_field(form, "humans_only") == "1", "first_only": form_field(form, "first_only") == "1",
            "unopened_after": form_field(form, "unopened_after").strip() or "3d",
            "digest": form_field(form, "digest").strip()}
    try:
        spec = await checked_spec(body, None, request.app[SETTINGS].allow_private_targets)
    except ValueError as e:
        return await render(request, status=400, error=_("The webhook was not added: %(reason)s", reason=str(e)))
    hook, secret = await add_webhook(request.app[STORE], request[PANEL_USER].id, spec)
    return await render(request, new_secret=(hook.id, secret) if secret else None, notice=_("Webhook added."))


async def _own_webhook(request: web.Request) -> Any:
    hook = await request.app[STORE].webhook(int_id(request), request[PANEL_USER].id)
    if hook is None:  # unknown and someone else's look the same
        raise web.HTTPNotFound()
    return hook


@login_required
async def test_webhook(request: web.Request) -> web.StreamResponse:
    await posted(request)
    hook = await _own_webhook(request)
    delivered, attempt = await send_sample(hook, request.app[SETTINGS])
    return await render(request, tested=(hook.id, delivered, attempt))


@login_required
async def delete_webhook(request: web.Request) -> web.StreamResponse:
    await posted(request)
    hook = await _own_webhook(request)
    await request.app[STORE].delete_webhook(hook.id, hook.user_id)
    return see_other(PAGE + "?done=webhook#webhooks")
