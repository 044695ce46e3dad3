"""/api/v1/privacy/{dnt,consent}: the do-not-track and consent lists, for admins.

The same lists as `trackrelay dnt|consent add|del|list`; the relay reads them per mail,
so a change applies to the next mail at once.
"""
from __future__ import annotations


from aiohttp import web

from admin.api import api_error, json_object, json_response
from admin.keys import STORE, request_user
from relay.policy import PRIVACY_LISTS, privacy_entry

ROUTE = "/privacy/{kind:" + "|".join(PRIVACY_LISTS) + "}"


def add_routes(api: web.Application) -> None:
    api.router.add_get(ROUTE, list_entries)
    api.router.add_post(ROUTE, add_entry)
    api.router.add_delete(ROUTE + "/{entry}", delete_entry)


def _admin_only(request: web.Request) -> web.Response | None:
    if not request_user(request).is_admin:
        return api_error(403, "the privacy lists are for admins")
    return None


async def list_entries(request: web.Request) -> web.Response:
    if refusal := _admin_only(request):
        return refusal
    kind = request.match_info["kind"]
    return json_response({"entries": await request.config_dict[STORE].privacy_list(kind)})


async def add_entry(request: web.Request) -> web.Response:
    if refusal := _admin_only(request):
        return refusal
    kind = request.match_info["kind"]
    body = await json_object(request, '{"entry": "a@b.c"}')
    try:
        entry = privacy_entry(kind, body["entry"]) if isinstance(body.get("entry"), str) else None
    except ValueError as e:
        return api_error(400, str(e))
    if entry is None:
        return api_error(400, 'expected {"entry": "ADDRESS"}' + (" or @DOMAIN" if kind == "dnt" else ""))
    added = await request.config_dict[STORE].privacy_add(kind, entry)
    return json_response({"entry": entry, "added": added}, 201 if added else 200)


async def delete_entry(request: web.Request) -> web.Response:
    if refusal := _admin_only(request):
        return refusal
    kind = request.match_info["kind"]
    try:
        entry = privacy_entry(kind, request.match_info["entry"])
    except ValueError as e:
        return api_error(400, str(e))
    if not await request.config_dict[STORE].privacy_del(kind, entry):
        return api_error(404, f"not listed: {entry}")
    return web.Response(status=204)
