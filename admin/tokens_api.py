"""/api/v1/tokens: a user's API tokens. A token's value is shown once, in the answer that
creates it; the store keeps only its hash. A deleted token answers 401 from then on.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from admin.api import api_error, int_id, json_object, json_response, rfc3339
from admin.keys import STORE, request_user
from relay.auth import new_api_token, token_hash
from relay.records import ApiToken

ROUTE = "/tokens"
MAX_NAME = 100


def add_routes(api: web.Application) -> None:
    api.router.add_get(ROUTE, list_tokens)
    api.router.add_post(ROUTE, create_token)
    api.router.add_delete(ROUTE + "/{id}", delete_token)


def token_json(t: ApiToken) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "created_at": rfc3339(t.created_at), "last_used_at": rfc3339(t.last_used_at)}


async def list_tokens(request: web.Request) -> web.Response:
    tokens = await request.config_dict[STORE].api_tokens(request_user(request).id)
    return json_response({"tokens": [token_json(t) for t in tokens]})


async def create_token(request: web.Request) -> web.Response:
    name = (await json_object(request, '{"name": "laptop"}')).get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        return api_error(400, f"name: a non-empty string of at most {MAX_NAME} characters")
    value = new_api_token()
    token = await request.config_dict[STORE].add_api_token(request_user(request).id, token_hash(value), name.strip())
    return json_response({**token_json(token), "token": value}, status=201)


async def delete_token(request: web.Request) -> web.Response:
    if not await request.config_dict[STORE].delete_api_token(request_user(request).id, int_id(request)):
        return api_error(404, "not found")  # unknown, or another user's: the same answer
    return web.Response(status=204)
