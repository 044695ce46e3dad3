"""/admin/privacy, for admins: the privacy report, the do-not-track and consent lists with
their records, and a data subject's access and erasure (the same store calls as
`trackrelay dnt|consent`, `export`, `erase` and /api/v1/privacy)."""
from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from admin.i18n import _, ngettext
from admin.keys import SETTINGS, STORE
from admin.panel import admin_only, form_field, login_required, page_context, posted, see_other
from admin.sessions import PANEL_USER
from relay.policy import ERASED_PREFIX, PRIVACY_LISTS, privacy_entry
from relay.privacy import privacy_report_lines, report_text, retention_cutoff, subject_json
from relay.records import ErasureCounts

PAGE = "/admin/privacy"


def add_routes(app: web.Application) -> None:
    app.router.add_get(PAGE, privacy_page)
    app.router.add_post(PAGE + "/list", edit_list)
    app.router.add_get(PAGE + "/export", export)
    app.router.add_post(PAGE + "/erase", erase)


@login_required
async def privacy_page(request: web.Request) -> web.StreamResponse:
    admin_only(request)
    store, p = request.app[STORE], request.app[SETTINGS].privacy
    lists = {kind: await store.privacy_records(kind) for kind in PRIVACY_LISTS}
    cutoff = retention_cutoff(time.time(), p.retention_days)
    report = report_text(privacy_report_lines(p, dnt=lists["dnt"], consented=len(lists["consent"]),
                                              due=None if cutoff is None else await store.purge_preview(cutoff)),
                         say=_)
    address = request.query.get("address", "").strip()
    subject, reason = None, request.query.get("error", "")
    if address:
        try:
            subject = await store.subject(privacy_entry("consent", address))
        except ValueError as e:
            reason = str(e)
    return aiohttp_jinja2.render_template("privacy.html", request, page_context(
        request, title=_("Privacy"), report=report, lists=lists, describe=describe, subject=subject,
        subject_events=sum(len(m.events) for m in subject.mails) if subject else 0, address=address,
        error=_("Not accepted: %(reason)s", reason=reason) if reason else "", done=request.query.get("done", "")))


def describe(entry: str) -> str:
    """A list's entry as shown: an erased address is only its digest."""
    return _("%(digest)s (an erased address)", digest=entry) if entry.startswith(ERASED_PREFIX) else entry


@login_required
async def edit_list(request: web.Request) -> web.StreamResponse:
    admin_only(request)
    form = await posted(request)
    kind, action = form_field(form, "kind"), form_field(form, "action")
    if kind not in PRIVACY_LISTS or action not in ("add", "del"):
        raise web.HTTPBadRequest()
    try:
        entry = privacy_entry(kind, form_field(form, "entry"))
    except ValueError as e:
        return see_other(f"{PAGE}?{_query(error=str(e))}")
    store = request.app[STORE]
    if action == "add":
        await store.privacy_add(kind, entry, source="panel", recorded_by=request[PANEL_USER].email)
    else:
        await store.privacy_del(kind, entry)
    return see_other(f"{PAGE}#{kind}")


@login_required
async def export(request: web.Request) -> web.StreamResponse:
    """The access request's JSON, as a download."""
    admin_only(request)
    try:
        address = privacy_entry("consent", request.query.get("address", ""))
    except ValueError as e:
        raise web.HTTPBadRequest(text=str(e))
    body = json.dumps(subject_json(await request.app[STORE].subject(address), time.time()), indent=2,
                      ensure_ascii=False)
    return web.Response(text=body, content_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="trackrelay-{address.replace(chr(34), "")}.json"'})


@login_required
async def erase(request: web.Request) -> web.StreamResponse:
    admin_only(request)
    form = await posted(request)
    try:
        address = privacy_entry("consent", form_field(form, "address"))
    except ValueError as e:
        return see_other(f"{PAGE}?{_query(error=str(e))}")
    keep = form_field(form, "keep_trackable") == "1"
    counts = await request.app[STORE].erase_subject(address, keep_trackable=keep, now=time.time())
    return see_other(f"{PAGE}?{_query(done=erasure_notice(address, counts, keep))}")


def erasure_notice(address: str, counts: ErasureCounts, keep_trackable: bool) -> str:
    """What an erasure removed, in the admin's language."""
    c = counts
    removed = [text for n, text in (
        (c.messages, ngettext("%(num)s message", "%(num)s messages", c.messages)),
        (c.copies, ngettext("%(num)s copy", "%(num)s copies", c.copies)),
        (c.recipients, ngettext("%(num)s recipient row", "%(num)s recipient rows", c.recipients)),
        (c.events, ngettext("%(num)s event", "%(num)s events", c.events)),
        (c.links, ngettext("%(num)s link", "%(num)s links", c.links)),
        (c.notifications, ngettext("%(num)s notification", "%(num)s notifications", c.notifications)),
        (c.deliveries, ngettext("%(num)s webhook delivery", "%(num)s webhook deliveries", c.deliveries)),
        (c.captured, ngettext("%(num)s captured copy", "%(num)s captured copies", c.captured))) if n]
    text = _("Erased %(address)s: %(removed)s.", address=address, removed=", ".join(removed) or _("nothing"))
    text += " " + (_("Kept trackable.") if keep_trackable else _("On the do-not-track list (as a digest)."))
    if counts.still_queued:
        text += " " + ngettext("%(num)s mail to them is still queued: erase again once it is delivered.",
                               "%(num)s mails to them are still queued: erase again once they are delivered.",
                               counts.still_queued)
    return text


def _query(**values: str) -> str:
    return urlencode(values)
