"""/admin/users and /admin/health, for admins: accounts (add, disable, reset a password,
the admin flag) and the figures of /metrics, readable."""
from __future__ import annotations

import asyncio
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web
from email_validator import EmailNotValidError, validate_email

from admin.i18n import N_, _
from admin.keys import METRICS, STORE
from admin.panel import admin_only, form_field, login_required, page_context, posted, see_other
from admin.sessions import PANEL_USER
from relay.auth import hash_password, new_password
from relay.errors import StoreConflict
from relay.records import UserChanges

USERS = "/admin/users"
# what an admin may do to an account from the list; none of them to their own (no lock-out)
DONE = {"disable": N_("%(email)s is disabled."), "enable": N_("%(email)s is enabled."),
        "make_admin": N_("%(email)s is an admin."), "drop_admin": N_("%(email)s is no admin any more.")}
ACTIONS = {"disable": UserChanges(disabled=True), "enable": UserChanges(disabled=False),
           "make_admin": UserChanges(is_admin=True), "drop_admin": UserChanges(is_admin=False)}


def add_routes(app: web.Application) -> None:
    app.router.add_get(USERS, users_page)
    app.router.add_post(USERS, add_user)
    app.router.add_post(USERS + "/change", change_user)
    app.router.add_get("/admin/health", health_page)


async def _render(request: web.Request, *, status: int = 200, **shown: object) -> web.Response:
    users = await request.app[STORE].users()
    context = page_context(request, title=_("Users"), users=users, notice=_done(request), error="",
                           password=None)
    context.update(shown)
    return aiohttp_jinja2.render_template("users.html", request, context, status=status)


def _done(request: web.Request) -> str:
    done = request.query.get("done", "")
    return _(DONE[done], email=request.query.get("email", "")) if done in DONE else ""


@login_required
async def users_page(request: web.Request) -> web.Response:
    admin_only(request)
    return await _render(request)


@login_required
async def add_user(request: web.Request) -> web.Response:
    """A new account with a generated password, shown this once."""
    admin_only(request)
    form = await posted(request)
    try:
        email = validate_email(form_field(form, "email").strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as e:
        return await _render(request, status=400, error=_("Not an email address: %(why)s", why=str(e)))
    password = new_password()
    try:
        await request.app[STORE].add_user(email, await asyncio.to_thread(hash_password, password),
                                          form_field(form, "admin") == "1")
    except StoreConflict:
        return await _render(request, status=400, error=_("%(email)s exists already.", email=email))
    return await _render(request, password=(email, password), notice=_("%(email)s added.", email=email))


@login_required
async def change_user(request: web.Request) -> web.Response:
    admin_only(request)
    form = await posted(request)
    email, action = form_field(form, "email").lower(), form_field(form, "action")
    if email == request[PANEL_USER].email:
        return await _render(request, status=400, error=_("Not on your own account (ask another admin)."))
    store = request.app[STORE]
    if await store.user_by_email(email) is None or (action not in ACTIONS and action != "reset_password"):
        raise web.HTTPNotFound()
    if action == "reset_password":  # ends their sessions; the new password is shown this once
        password = new_password()
        await store.set_password(email, await asyncio.to_thread(hash_password, password))
        return await _render(request, password=(email, password), notice=_("New password for %(email)s.", email=email))
    await store.update_user(email, ACTIONS[action])
    return see_other(f"{USERS}?{urlencode({'done': action, 'email': email})}")


@login_required
@aiohttp_jinja2.template("health.html")
async def health_page(request: web.Request) -> dict:
    admin_only(request)
    return page_context(request, title=_("Health"), families=await request.app[METRICS].families())
