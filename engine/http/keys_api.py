"""The datastore under /api/v1/keys in StackStorm's shapes, so `st2 key ...` works.

Scopes arrive short (`system`, `user`, `all`) or full (`st2kv.system`); replies say the
full name. A key in the user scope without a `user` belongs to the rule user
(engine.rules.enforce.RULE_USER), whose keys rules read as `st2kv.user.<name>`.
Revealing a secret (`decrypt=true`) needs an admin API key; DELETE answers 204, or 404.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from engine.errors import IngestError
from engine.http.api import paging
from engine.http.api_json import read_json
from engine.http.app import RUNTIME, json_response
from engine.http.auth import GATEKEEPER
from engine.http.guard import guarded
from engine.kv import KeyValuePair
from engine.rules.enforce import RULE_USER

_BODY_FIELDS = frozenset({"name", "scope", "user", "value", "secret", "encrypted", "ttl"})
# Read-only fields a client may echo back from a GET; ignored.
_ECHOED_FIELDS = frozenset(
    {"id", "uid", "description", "expire_timestamp", "created_at", "updated_at"}
)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/keys", guarded(list_keys))
    app.router.add_get("/api/v1/keys/", guarded(list_keys))
    app.router.add_get("/api/v1/keys/{name}", guarded(get_key))
    app.router.add_put("/api/v1/keys/{name}", guarded(put_key))
    app.router.add_delete("/api/v1/keys/{name}", guarded(delete_key))


def _decrypt(query: Mapping[str, str]) -> bool:
    raw = query.get("decrypt", "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise IngestError(f"decrypt must be true or false, got {query['decrypt']!r}")
    return raw in ("true", "1")


def _user(value: Any) -> str:
    if value is None or value == "":
        return RULE_USER
    if not isinstance(value, str):
        raise IngestError("'user' must be a string")
    return value


async def _may_reveal(request: web.Request, pairs: list[KeyValuePair], decrypt: bool) -> None:
    if decrypt and any(pair.secret for pair in pairs):
        await request.app[GATEKEEPER].require_key(request, admin=True)


async def list_keys(request: web.Request) -> web.Response:
    query = request.query
    decrypt = _decrypt(query)
    limit, offset = paging(query)
    datastore = request.app[RUNTIME].datastore
    # `user` only narrows the user scope; without it every user's keys are listed.
    pairs = await datastore.list(
        prefix=query.get("prefix"), scope=query.get("scope"), user=query.get("user")
    )
    page = pairs[offset : offset + limit]
    await _may_reveal(request, page, decrypt)
    return json_response(
        [datastore.to_api(pair, decrypt=decrypt) for pair in page],
        headers={"X-Total-Count": str(len(pairs))},
    )


async def get_key(request: web.Request) -> web.Response:
    query = request.query
    decrypt = _decrypt(query)
    datastore = request.app[RUNTIME].datastore
    pair = await datastore.get(
        request.match_info["name"], scope=query.get("scope"), user=_user(query.get("user"))
    )
    await _may_reveal(request, [pair], decrypt)
    return json_response(datastore.to_api(pair, decrypt=decrypt))


async def put_key(request: web.Request) -> web.Response:
    body = await _json_object(request)
    unknown = sorted(set(body) - _BODY_FIELDS - _ECHOED_FIELDS)
    if unknown:
        raise IngestError(f"unknown field {unknown[0]!r}; known: {', '.join(sorted(_BODY_FIELDS))}")
    if "value" not in body or body["value"] is None:
        raise IngestError("'value' is required")
    flags = {}
    for flag in ("secret", "encrypted"):
        flags[flag] = body.get(flag) or False
        if not isinstance(flags[flag], bool):
            raise IngestError(f"{flag!r} must be true or false")
    datastore = request.app[RUNTIME].datastore
    stored = await datastore.set(
        request.match_info["name"],
        body["value"],
        scope=_scope(body.get("scope")),
        user=_user(body.get("user")),
        secret=flags["secret"],
        encrypted=flags["encrypted"],
        ttl=body.get("ttl"),
    )
    return json_response(datastore.to_api(stored))


async def delete_key(request: web.Request) -> web.Response:
    query = request.query
    datastore = request.app[RUNTIME].datastore
    name = request.match_info["name"]
    scope = query.get("scope")
    if not await datastore.delete(name, scope=scope, user=_user(query.get("user"))):
        raise IngestError(f'datastore key "{name}" not found in scope {scope or "system"}', 404)
    return web.Response(status=204)


def _scope(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise IngestError("'scope' must be a string: system or user")
    return value


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        data = await read_json(request, {})
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise IngestError("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise IngestError("the body must be a JSON object")
    return data
