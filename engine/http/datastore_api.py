"""The datastore under /api/v1/keys in StackStorm's shapes, so `st2 key ...` works.

Scopes arrive short (`system`, `user`, `all`) or full (`st2kv.system`); replies say the
full name. A key in the user scope without a `user` belongs to the caller (the API key's
name), or for an admin key (and with auth disabled) to the rule user
(engine.rules.enforce.RULE_USER), whose keys rules read as `st2kv.user.<name>`.

Who may (engine.http.rbac): user-scoped values are seen and written only by their user or
an admin; system values are written by admins only; observers write nothing. A secret is
revealed (`decrypt=true`) to an admin, or in the user scope to its own user; to anyone
else it shows no value at all, not even its ciphertext. DELETE answers 204, or 404.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from engine.errors import IngestError
from engine.http import rbac
from engine.http.api_json import read_json
from engine.http.auth import API_KEY
from engine.http.context import RUNTIME, json_response
from engine.http.guard import guarded
from engine.http.paging import paging
from engine.model.apikeys import ApiKey
from engine.model.kv import SYSTEM_SCOPE, KeyValuePair, parse_scope
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


def _user(value: Any, key: ApiKey | None) -> str:
    if value is None or value == "":
        return RULE_USER if key is None or key.admin else key.name
    if not isinstance(value, str):
        raise IngestError("'user' must be a string")
    return value


def _check_reveal(key: ApiKey | None, pairs: list[KeyValuePair], decrypt: bool) -> None:
    for pair in pairs:
        if decrypt and pair.secret and not rbac.may_decrypt(key, pair.user):
            assert key is not None
            raise rbac.denied(
                key,
                f"decrypt secret {pair.name!r} in {pair.scope}",
                "only an admin key (or, in the user scope, the value's own user) may",
            )


def _shown(request: web.Request, pair: KeyValuePair, decrypt: bool) -> dict[str, Any]:
    shown = request.app[RUNTIME].datastore.to_api(pair, decrypt=decrypt)
    if pair.secret and not rbac.may_decrypt(request.get(API_KEY), pair.user):
        shown["value"] = None  # not even the ciphertext
    return shown


async def list_keys(request: web.Request) -> web.Response:
    query = request.query
    decrypt = _decrypt(query)
    limit, offset = paging(query)
    key = request.get(API_KEY)
    if query.get("user"):
        rbac.require_user(key, "list", query["user"])
    datastore = request.app[RUNTIME].datastore
    # `user` only narrows the user scope; without it every user's keys the caller may see.
    pairs = [
        pair
        for pair in await datastore.list(
            prefix=query.get("prefix"), scope=query.get("scope"), user=query.get("user")
        )
        if pair.scope == SYSTEM_SCOPE or rbac.sees_user(key, pair.user)
    ]
    page = pairs[offset : offset + limit]
    _check_reveal(key, page, decrypt)
    return json_response(
        [_shown(request, pair, decrypt) for pair in page],
        headers={"X-Total-Count": str(len(pairs))},
    )


async def get_key(request: web.Request) -> web.Response:
    query = request.query
    decrypt = _decrypt(query)
    key = request.get(API_KEY)
    scope = parse_scope(query.get("scope")) or SYSTEM_SCOPE
    user = _user(query.get("user"), key)
    if scope != SYSTEM_SCOPE:
        rbac.require_user(key, "read", user)
    pair = await request.app[RUNTIME].datastore.get(
        request.match_info["name"], scope=scope, user=user
    )
    _check_reveal(key, [pair], decrypt)
    return json_response(_shown(request, pair, decrypt))


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
    key = request.get(API_KEY)
    scope = parse_scope(_scope(body.get("scope"))) or SYSTEM_SCOPE
    user = _user(body.get("user"), key)
    name = request.match_info["name"]
    rbac.require_kv_write(key, "write", name, scope, None if scope == SYSTEM_SCOPE else user)
    datastore = request.app[RUNTIME].datastore
    stored = await datastore.set(
        name,
        body["value"],
        scope=scope,
        user=user,
        secret=flags["secret"],
        encrypted=flags["encrypted"],
        ttl=body.get("ttl"),
    )
    return json_response(_shown(request, stored, False))


async def delete_key(request: web.Request) -> web.Response:
    query = request.query
    datastore = request.app[RUNTIME].datastore
    name = request.match_info["name"]
    key = request.get(API_KEY)
    scope = parse_scope(query.get("scope")) or SYSTEM_SCOPE
    user = _user(query.get("user"), key)
    rbac.require_kv_write(key, "delete", name, scope, None if scope == SYSTEM_SCOPE else user)
    if not await datastore.delete(name, scope=scope, user=user):
        shown = query.get("scope") or "system"
        raise IngestError(f'datastore key "{name}" not found in scope {shown}', 404)
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
