"""/api/v1/privacy: the do-not-track and consent lists, and data subjects' access and
erasure requests, for admins.

The same as `trackrelay dnt|consent add|del|list`, `export` and `erase`; the relay reads
the lists per mail, so a change applies to the next mail at once.
"""
from __future__ import annotations

import dataclasses
import time

from aiohttp import web

from admin.api import api_error, json_object, json_response
from admin.keys import STORE, request_user
from relay.policy import PRIVACY_LISTS, privacy_entry
from relay.privacy import record_json, subject_json

ROUTE = "/privacy/{kind:" + "|".join(PRIVACY_LISTS) + "}"
SUBJECT = "/privacy/subjects/{address}"


def add_routes(api: web.Application) -> None:
    api.router.add_get(ROUTE, list_entries)
    api.router.add_post(ROUTE, add_entry)
    api.router.add_delete(ROUTE + "/{entry}", delete_entry)
    api.router.add_get(SUBJECT, get_subject)
    api.router.add_delete(SUBJECT, erase_subject)


def _admin_only(request: web.Request) -> web.Response | None:
    if not request_user(request).is_admin:
        return api_error(403, "the privacy lists are for admins")
    return None


async def list_entries(request: web.Request) -> web.Response:
    if refusal := _admin_only(request):
        return refusal
    records = await request.config_dict[STORE].privacy_records(request.match_info["kind"])
    return json_response({"entries": [r.entry for r in records], "records": [record_json(r) for r in records]})


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
    added = await request.config_dict[STORE].privacy_add(kind, entry, source="api",
                                                         recorded_by=request_user(request).email)
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


def _subject_address(request: web.Request) -> str | web.Response:
    try:
        return privacy_entry("consent", request.match_info["address"])  # an address, not a domain
    except ValueError as e:
        return api_error(400, str(e))


async def get_subject(request: web.Request) -> web.Response:
    """An access request's answer: everything held about the address."""
    if refusal := _admin_only(request):
        return refusal
    address = _subject_address(request)
    if isinstance(address, web.Response):
        return address
    return json_response(subject_json(await request.config_dict[STORE].subject(address), time.time()))


async def erase_subject(request: web.Request) -> web.Response:
    """An erasure request: everything about the address gone; `?keep_trackable=1` leaves
    them off the do-not-track list."""
    if refusal := _admin_only(request):
        return refusal
    address = _subject_address(request)
    if isinstance(address, web.Response):
        return address
    keep = request.query.get("keep_trackable", "") in ("1", "true")
    counts = await request.config_dict[STORE].erase_subject(address, keep_trackable=keep, now=time.time())
    return json_response({"address": address, "kept_trackable": keep, **dataclasses.asdict(counts)})
