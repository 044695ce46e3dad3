"""The HTML panel on the admin listener: /login, /logout, / (the user's messages),
/messages/<id> (one message, same id as the JSON API) and the capture upstream's copies.

Views return template dicts (aiohttp-jinja2, autoescape on); the middleware here renders
error pages and adds the security headers; admin/sessions.py turns the cookie into a user.
Everything a recipient controls (subject, address, URL, user agent, raw mail) reaches the
browser only through autoescaped templates or as text/plain with nosniff.
"""
from __future__ import annotations

import functools
import logging
import time
from email.parser import HeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote, urlencode

import aiohttp_jinja2
import jinja2
from aiohttp import web

from admin.api import report_or_404, rfc3339
from admin.capture_view import html_part, neutralised
from admin.i18n import (
    N_, _, ago, choose, current, local_time, ngettext, number, template_gettext, template_ngettext, use,
)
from admin.keys import SETTINGS, STORE, mail_scope
from admin.sessions import (
    CSRF_FIELD,
    IDLE_TIMEOUT,
    LOGIN_COOKIE,
    MAX_AGE,
    PANEL,
    PANEL_USER,
    SESSION_COOKIE,
    SESSION_ID,
    LoginThrottle,
    PanelState,
    csrf_ok,
    load_session,
    new_secret,
    over_tls,
    plausible,
    request_csrf,
    request_ip,
    safe_next,
    session_hash,
    set_login_cookie,
    set_session_cookie,
)
from admin.timeline import WIDTH as TIMELINE_WIDTH, timeline
from relay.auth import verify_password_async
from relay.classify import CLASSES
from relay.errors import StoreUnavailable
from relay.headers import header_block
from relay.records import CapturedCopy, HitCounts, MessageReport, Notification
from relay.store.queries import cursor_text, parse_cursor

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
PAGE_SIZE = 100
UNREAD = web.RequestKey("trackrelay_unread", int)  # the bell's count on a logged-in page
# no inline script or style anywhere: the panel has neither, so injected markup cannot run
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; object-src 'none'; base-uri 'none'; "
                                "form-action 'self'; frame-ancestors 'none'"),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
# what an error page says (N_: marked for the catalog, translated when shown)
ERROR_TEXT = {
    403: N_("This form has expired or did not come from this site. Reload the page and try again."),
    404: N_("There is nothing here, or it is not yours to see."),
    405: N_("That method is not allowed here."),
    503: N_("The store is unavailable right now. Try again in a moment."),
}
# the reasons aiohttp gives its errors, said on error pages
REASONS = (N_("Bad Request"), N_("Forbidden"), N_("Not Found"), N_("Method Not Allowed"), N_("Too Many Requests"))
STATUS_NAMES = {"queued": N_("queued"), "deferred": N_("deferred"), "sent": N_("sent"), "partial": N_("partial"),
                "bounced": N_("bounced"), "failed": N_("failed")}
CLASS_NAMES = {"human": N_("human"), "proxy": N_("proxy"), "prefetch": N_("prefetch"), "scanner": N_("scanner"),
               "self": N_("self")}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup(app: web.Application, *, clock: Callable[[], float] = time.time) -> None:
    """Register the panel on the admin app: templates, static files, middlewares, routes."""
    env = aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                               undefined=jinja2.StrictUndefined, extensions=["jinja2.ext.i18n"],
                               filters={"when": when, "rfc3339": rfc3339, "ago": lambda ts: ago(ts, clock()),
                                        "n": number})
    env.install_gettext_callables(template_gettext, template_ngettext, newstyle=True)  # type: ignore[attr-defined]
    env.globals.update(status_name=status_name, class_name=class_name)
    app[PANEL] = PanelState(clock=clock, throttle=LoginThrottle(app[SETTINGS].login_attempts_per_minute))
    app.middlewares.append(panel_pages)
    app.middlewares.append(load_session)
    app.middlewares.append(language)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login_submit)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", message_list)
    app.router.add_get("/messages/{id}", message_detail)
    app.router.add_get("/messages/{id}/captured/{capture}.txt", captured_raw)
    app.router.add_get("/messages/{id}/captured/{capture}.html", captured_html)
    app.router.add_get("/notifications", notifications_page)
    app.router.add_post("/notifications/read", notifications_read)
    app.router.add_static("/static/", HERE / "static", append_version=False)


# edges: error pages and headers

@web.middleware
async def panel_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/api/"):  # the API answers JSON errors of its own
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as e:
        if e.status < 400:  # redirects keep flowing as exceptions, with the headers added
            _add_headers(request, e.headers)
            raise
        response = error_page(request, e.status, e.reason)
        response.headers.update({k: v for k, v in e.headers.items() if k.lower() == "allow"})
    except StoreUnavailable:
        response = error_page(request, 503, N_("Service Unavailable"))
        response.headers["Retry-After"] = "5"
    except Exception:
        log.exception("panel error on %s %s", request.method, request.path)
        response = error_page(request, 500, N_("Internal Server Error"),
                              N_("Something went wrong on our side. It has been logged."))
    _add_headers(request, response.headers)
    return response


def _add_headers(request: web.Request, headers: Any) -> None:
    for name, value in SECURITY_HEADERS.items():
        headers.setdefault(name, value)
    if not request.path.startswith("/static/"):
        headers.setdefault("Cache-Control", "no-store")  # pages hold one user's data


def error_page(request: web.Request, status: int, title: str, text: str | None = None) -> web.Response:
    """title and text: English msgids, said in the request's language."""
    return aiohttp_jinja2.render_template("error.html", request, page_context(
        request, title=f"{status} {_(title)}", text=_(text or ERROR_TEXT.get(status, title))), status=status)


@web.middleware
async def language(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What the page says is in the user's language and time zone, else the browser's language."""
    user = request.get(PANEL_USER)
    use(choose(user.language if user else "", request.headers.get("Accept-Language", "")),
        user.timezone if user else "")
    return await handler(request)


def status_name(status: str) -> str:
    return _(STATUS_NAMES[status]) if status in STATUS_NAMES else status


def class_name(cls: str) -> str:
    return _(CLASS_NAMES[cls]) if cls in CLASS_NAMES else cls


def page_context(request: web.Request, **values: Any) -> dict[str, Any]:
    """What base.html needs on every page: the user (or None) and their logout form's token."""
    user = request.get(PANEL_USER)
    csrf = request_csrf(request) if user is not None and SESSION_ID in request else ""
    return {"user": user, "csrf": csrf, "unread": request.get(UNREAD, 0), "lang": current(), **values}


def login_required(view: Handler) -> Handler:
    @functools.wraps(view)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        if PANEL_USER not in request:
            raise web.HTTPFound("/login?" + urlencode({"next": request.raw_path}, quote_via=quote))
        request[UNREAD] = await request.app[STORE].unread_notifications(request[PANEL_USER].id)  # the bell
        return await view(request)

    return wrapper


def when(ts: float | None) -> str:
    """A time for people, in their language and time zone (the API's RFC 3339 is in the
    datetime attribute)."""
    if ts is None:
        return "\u2014"
    return local_time(ts)


def form_field(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""  # an uploaded file where text belongs: nothing


async def posted(request: web.Request) -> Any:
    """A panel form, once its CSRF token is checked (403 otherwise)."""
    form = await request.post()
    if not csrf_ok(request_csrf(request), form_field(form, CSRF_FIELD)):
        raise web.HTTPForbidden()
    return form


def admin_only(request: web.Request) -> None:
    """Admin pages are a 404 for everyone else, like another user's mail."""
    if not request[PANEL_USER].is_admin:
        raise web.HTTPNotFound()


def see_other(location: str) -> web.Response:
    # 303: after a POST the browser follows with a GET
    return web.Response(status=303, headers={"Location": location})


# login and logout

async def login_form(request: web.Request) -> web.StreamResponse:
    if PANEL_USER in request:
        return see_other(safe_next(request.query.get("next")))
    return _login_page(request, next_url=safe_next(request.query.get("next")))


def _login_page(request: web.Request, *, next_url: str, error: str = "", email: str = "",
                status: int = 200) -> web.Response:
    token = request.cookies.get(LOGIN_COOKIE)
    if not plausible(token):
        token = new_secret()
    response = aiohttp_jinja2.render_template("login.html", request, page_context(
        request, title=_("Log in"), login_csrf=token, error=error, email=email, next_url=next_url), status=status)
    set_login_cookie(response, token, secure=over_tls(request))
    return response


async def login_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    if not csrf_ok(request.cookies.get(LOGIN_COOKIE), form_field(form, CSRF_FIELD)):
        raise web.HTTPForbidden()
    email, password = form_field(form, "email").strip(), form_field(form, "password")
    next_url = safe_next(form_field(form, "next"))
    state, store = request.app[PANEL], request.app[STORE]
    ip = request_ip(request)
    if not state.throttle.attempt(email, ip):
        return _login_page(request, next_url=next_url, email=email, status=429,
                           error=_("Too many login attempts. Wait a minute and try again."))
    user = await store.user_by_email(email) if email and len(email) <= 320 else None
    user = None if user is not None and user.disabled else user  # no login: as if unknown
    # an unknown address costs the same argon2 check as a wrong password: no enumeration
    if not await verify_password_async(user.password_hash if user else None, password) or user is None:
        log.info("panel login failed for %r from %s", email[:320], ip)
        return _login_page(request, next_url=next_url, email=email, error=_("Wrong email or password."))
    now = state.clock()
    await store.delete_stale_panel_sessions(now - IDLE_TIMEOUT, now - MAX_AGE)
    if SESSION_ID in request:  # logging in again replaces the session, it does not add one
        await store.delete_panel_session(session_hash(request[SESSION_ID]))
    session_id = new_secret()  # always a new id: a planted cookie never becomes a login
    await store.add_panel_session(session_hash(session_id), user.id, now, ip)
    if ip:
        state.should_note_ip(user.id, ip, now)
        await store.note_sender_ip(user.id, ip, now)
    response = see_other(next_url)
    set_session_cookie(response, session_id, secure=over_tls(request))
    response.del_cookie(LOGIN_COOKIE, path="/login")
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    if PANEL_USER not in request:
        return see_other("/login")
    form = await request.post()
    if not csrf_ok(request_csrf(request), form_field(form, CSRF_FIELD)):
        raise web.HTTPForbidden()
    await request.app[STORE].delete_panel_session(session_hash(request[SESSION_ID]))
    response = see_other("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


# notifications (the bell)

@login_required
@aiohttp_jinja2.template("notifications.html")
async def notifications_page(request: web.Request) -> dict[str, Any]:
    items = await request.app[STORE].notifications(request[PANEL_USER].id, 100)
    return page_context(request, title=_("Notifications"), notifications=items, say=notification_text)


def notification_text(n: Notification) -> str:
    """What happened, in the page's language (the stored text, the API's, is English)."""
    who, subject = n.recipient or _("a recipient"), n.subject or _("(no subject)")
    if n.type == "open":
        return _("%(who)s opened “%(subject)s”", who=who, subject=subject)
    return _("%(who)s clicked %(url)s in “%(subject)s”", who=who, url=n.url or "", subject=subject)


@login_required
async def notifications_read(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    if not csrf_ok(request_csrf(request), form_field(form, CSRF_FIELD)):
        raise web.HTTPForbidden()
    await request.app[STORE].mark_notifications_read(request[PANEL_USER].id, None)
    return see_other("/notifications")


# messages

def _scope(request: web.Request) -> int | None:
    return mail_scope(request[PANEL_USER], request.config_dict[SETTINGS])


async def _report(request: web.Request) -> MessageReport:
    return await report_or_404(request, _scope(request))


def _list_url(**query: str) -> str:
    query = {k: v for k, v in query.items() if v}
    return "/" + ("?" + urlencode(query) if query else "")


def open_title(c: HitCounts) -> str:
    """The open icon's hover text: people and machines apart, first and last open."""
    text = ngettext("%(num)s open by people · %(machines)s by machines",
                    "%(num)s opens by people · %(machines)s by machines", c.human_opens,
                    machines=c.opens - c.human_opens)
    if c.first_open_at is not None:
        text += " · " + _("first %(first)s · last %(last)s", first=when(c.first_open_at), last=when(c.last_open_at))
    return text


def status_reason(m: MessageReport) -> str:
    """Why mail is deferred or bounced: the upstream's answer to the first recipient that has one."""
    if m.status not in ("deferred", "partial", "bounced"):
        return ""
    return next((r.detail for r in m.recipients if r.detail), "")


def click_title(c: HitCounts) -> str:
    return ngettext("%(num)s click by people · %(machines)s by machines",
                    "%(num)s clicks by people · %(machines)s by machines", c.human_clicks,
                    machines=c.clicks - c.human_clicks)


@login_required
@aiohttp_jinja2.template("messages.html")
async def message_list(request: web.Request) -> dict[str, Any]:
    """Newest first, PAGE_SIZE at a time by keyset (?before=<cursor>); ?tracked=1; ?q= searches."""
    tracked = request.query.get("tracked") == "1"
    search = request.query.get("q", "").strip()[:200]
    try:
        before = parse_cursor(request.query["before"]) if request.query.get("before") else None
    except ValueError:
        before = None  # a stale or edited link: the first page
    reports = await request.app[STORE].message_reports(
        _scope(request), tracked=True if tracked else None, limit=PAGE_SIZE + 1, before=before, search=search)
    page = reports[:PAGE_SIZE]
    flags = {"tracked": "1" if tracked else "", "q": search}
    older = cursor_text((page[-1].received_at, page[-1].id)) if len(reports) > PAGE_SIZE else ""
    return page_context(
        request, title=_("Tracked mail") if tracked else _("Mail"), messages=page, tracked=tracked, search=search,
        newest_url=_list_url(**flags) if before else None,
        older_url=_list_url(**flags, before=older) if older else None,
        all_url=_list_url(q=search), tracked_url=_list_url(tracked="1", q=search),
        open_title=open_title, click_title=click_title, status_reason=status_reason)


@login_required
@aiohttp_jinja2.template("message.html")
async def message_detail(request: web.Request) -> dict[str, Any]:
    """One message: recipients, a timeline, links, the events (?class= shows one class)."""
    report = await _report(request)
    captures = [capture_summary(c) for c in await request.app[STORE].captured(report.id)]
    shown = request.query.get("class", "")
    events = [e for e in report.events if e.cls == shown] if shown in CLASSES else report.events
    return page_context(request, title=report.subject or _("(no subject)"), m=report, captures=captures,
                        event_classes=CLASSES, shown_class=shown if shown in CLASSES else "", events=events,
                        line=timeline(report.events, report.received_at), width=TIMELINE_WIDTH)


async def _capture(request: web.Request) -> tuple[MessageReport, CapturedCopy]:
    """The message's captured copy named by {capture}, if the user may see the message."""
    report = await _report(request)
    raw_capture = request.match_info["capture"]
    if not (raw_capture.isascii() and raw_capture.isdigit()) or len(raw_capture) > 18:
        raise web.HTTPNotFound()
    found = [c for c in await request.app[STORE].captured(report.id) if c.id == int(raw_capture)]
    if not found:
        raise web.HTTPNotFound()
    return report, found[0]


@login_required
async def captured_raw(request: web.Request) -> web.StreamResponse:
    """A delivered copy as the capture upstream kept it: text/plain, inline, never HTML."""
    report, capture = await _capture(request)
    return web.Response(body=capture.data, headers={
        "Content-Type": "text/plain; charset=utf-8",
        "Content-Disposition": f'inline; filename="message-{report.id}-copy-{capture.id}.txt"',
        "X-Content-Type-Options": "nosniff",
        # even a browser that ignored the type could run nothing from this document
        "Content-Security-Policy": "default-src 'none'; sandbox",
    })


@login_required
async def captured_html(request: web.Request) -> web.StreamResponse:
    """The copy's HTML for the page's sandboxed frame: no script, nothing fetched (the
    pixel neither), no link or form that goes anywhere - viewing it records nothing."""
    _, capture = await _capture(request)
    html = html_part(capture.data)
    if html is None:
        raise web.HTTPNotFound()
    return web.Response(body=neutralised(html), headers={
        "Content-Type": "text/html; charset=utf-8",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox; "
                                    "frame-ancestors 'self'"),
        "X-Frame-Options": "SAMEORIGIN",
    })


def capture_summary(copy: CapturedCopy) -> dict[str, Any]:
    """What the page shows of a captured copy: envelope, size and header lines."""
    head = header_block(copy.data)
    parsed = HeaderParser(policy=compat32).parsestr(head.decode("utf-8", "replace"), headersonly=True)
    return {"id": copy.id, "at": copy.at, "mail_from": copy.mail_from, "rcpt_tos": copy.rcpt_tos,
            "size": len(copy.data), "html": b"text/html" in copy.data.lower(),
            "headers": [(name, str(value)) for name, value in parsed.items()]}
