"""REST for API keys under /api/v1/apikeys, StackStorm-like; every route needs an admin key.

The key itself is in the creation answer only; lists and updates never show it or its hash.
A key's `role` (engine.model.roles) and an operator's `grants` ({"packs": [...], "actions":
[...]}) are given at creation and changed with PUT; without a role (what `st2 apikey
create` sends) a key is an observer, or a posting key when limited to webhooks.
"""

from __future__ import annotations

import functools
import json
import secrets
from typing import Any

from aiohttp import web

from engine.errors import IngestError, NotFound
from engine.http.api_json import read_json
from engine.http.auth import GATEKEEPER
from engine.http.context import RUNTIME, Handler, json_response
from engine.http.guard import guarded
from engine.model.apikeys import ApiKeyError, lifetime_from_api, new_api_key, rate_from_api
from engine.model.roles import Grants, RoleError, check_role

_CREATE_FIELDS = (
    "name", "webhooks", "triggers", "expiration", "admin", "role", "grants", "rate_limit"
)  # fmt: skip
_CHANGEABLE = frozenset({"enabled", "role", "grants", "rate_limit"})
# Fields of a key's API shape (and StackStorm's: uid, user, metadata, key_hash) that a
# client reading the key and putting it back repeats unchanged.
_READ_ONLY = frozenset(
    {"id", "uid", "name", "key_prefix", "admin", "webhooks", "triggers", "created_at",
     "expires_at", "user", "metadata", "key_hash"}
)  # fmt: skip


def add_routes(app: web.Application) -> None:
    for path in ("/api/v1/apikeys", "/api/v1/apikeys/"):
        app.router.add_post(path, guarded(create))
        app.router.add_get(path, guarded(list_keys))
        app.router.add_delete(path, guarded(_changing(delete_many)))
    app.router.add_patch("/api/v1/apikeys/{id}/extend", guarded(_changing(extend)))
    app.router.add_put("/api/v1/apikeys/{id}", guarded(_changing(update)))
    app.router.add_get("/api/v1/apikeys/{id}", guarded(get_key))
    app.router.add_delete("/api/v1/apikeys/{id}", guarded(_changing(delete_one)))


def _changing(handler: Handler) -> Handler:
    """`handler` changes keys: the key records cached for authentication are dropped after
    it (engine.http.key_cache), whether it finished or failed half-way."""

    @functools.wraps(handler)
    async def changing(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            request.app[GATEKEEPER].keys.forget()

    return changing


async def _admin(request: web.Request) -> None:
    await request.app[GATEKEEPER].require_key(request, admin=True)


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        data = await read_json(request, {})
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise IngestError("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise IngestError("the body must be a JSON object")
    return data


def _api_error(exc: ApiKeyError) -> IngestError:
    return IngestError(str(exc), 400)


async def create(request: web.Request) -> web.Response:
    await _admin(request)
    data = await _json_object(request)
    unknown = sorted(set(data) - set(_CREATE_FIELDS))
    if unknown:
        raise IngestError(f"unknown field {unknown[0]!r}; known: {', '.join(_CREATE_FIELDS)}")
    admin = data.get("admin", False)
    if not isinstance(admin, bool):
        raise IngestError("'admin' must be true or false")
    try:
        lifetime = None
        if data.get("expiration") is not None:
            lifetime = lifetime_from_api(data["expiration"])
        rate, burst = rate_from_api(data.get("rate_limit"))
        record, key = new_api_key(
            # `st2 apikey create -k` sends {}: such a key gets a name of its own.
            data.get("name", f"st2-{secrets.token_hex(4)}"),
            role=data.get("role"),
            grants=Grants.from_api(data.get("grants")),
            admin=admin,
            webhooks=data.get("webhooks") or (),
            triggers=data.get("triggers") or (),
            lifetime=lifetime,
            rate_limit=rate,
            rate_burst=burst,
        )
    except (ApiKeyError, RoleError) as exc:
        raise IngestError(str(exc), 400) from None
    await request.app[RUNTIME].store.create_api_key(record)
    return json_response({**record.to_api(), "key": key}, 201)


async def list_keys(request: web.Request) -> web.Response:
    await _admin(request)
    keys = await request.app[RUNTIME].store.list_api_keys()
    return json_response([k.to_api() for k in keys], headers={"X-Total-Count": str(len(keys))})


async def get_key(request: web.Request) -> web.Response:
    await _admin(request)
    record = await request.app[RUNTIME].store.get_api_key(request.match_info["id"])
    return json_response(record.to_api())


async def extend(request: web.Request) -> web.Response:
    await _admin(request)
    data = await _json_object(request)
    try:
        by = lifetime_from_api(data, "the body")
    except ApiKeyError as exc:
        raise _api_error(exc) from None
    record = await request.app[RUNTIME].store.extend_api_key(request.match_info["id"], by)
    return json_response(record.to_api())


async def update(request: web.Request) -> web.Response:
    """Change `enabled`, `role` and `grants`. `st2 apikey enable|disable` PUT back the whole
    object they read: the other fields are accepted when they repeat the stored values,
    and refused by name when they try to change one."""
    await _admin(request)
    data = await _json_object(request)
    store = request.app[RUNTIME].store
    key_id = request.match_info["id"]
    record = await store.get_api_key(key_id)
    stored = record.to_api()
    enabled = data.get("enabled")
    if "enabled" in data and not isinstance(enabled, bool):
        raise IngestError("'enabled' must be true or false")
    for name in sorted(set(data) - _CHANGEABLE):
        if name in _READ_ONLY and data[name] == stored.get(name, data[name]):
            continue
        raise IngestError(
            f'{name!r} cannot be changed; only {{"enabled": true|false}}, "role", "grants"'
            ' and "rate_limit" can'
        )
    role_given = data.get("role", record.role) != record.role
    grants_given = "grants" in data and data["grants"] != stored["grants"]
    if role_given or grants_given:
        try:
            grants = Grants.from_api(data.get("grants", stored["grants"]))
            role = check_role(
                data.get("role", record.role),
                grants=grants,
                scoped=bool(record.webhooks or record.triggers),
                name=record.name,
            )
        except RoleError as exc:
            raise IngestError(str(exc), 400) from None
        record = await store.set_api_key_role(key_id, role, grants)
    if isinstance(enabled, bool) and enabled != record.enabled:
        record = await store.set_api_key_enabled(key_id, enabled)
    if "rate_limit" in data and data["rate_limit"] != stored["rate_limit"]:
        try:
            rate, burst = rate_from_api(data["rate_limit"])
        except ApiKeyError as exc:
            raise _api_error(exc) from None
        record = await store.set_api_key_rate(key_id, rate, burst)
    return json_response(record.to_api())


async def delete_one(request: web.Request) -> web.Response:
    await _admin(request)
    key_id = request.match_info["id"]
    if not await request.app[RUNTIME].store.delete_api_keys([key_id]):
        raise NotFound(f"no API key with id {key_id!r}")
    return web.Response(status=204)


async def delete_many(request: web.Request) -> web.Response:
    await _admin(request)
    ids = (await _json_object(request)).get("ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise IngestError('the body must be {"ids": ["<id>", ...]}')
    deleted = await request.app[RUNTIME].store.delete_api_keys(ids)
    missing = [i for i in ids if i not in deleted]
    return json_response({"deleted": deleted, "not_found": missing})
