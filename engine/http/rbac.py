"""What a valid key's role lets it do on /api/v1 (the roles are in engine.model.roles).

`check_api_rights` runs for every API request (engine.http.auth.check_request): reads are
open to admin, operator and observer keys; a write is refused here unless the key is an
admin, or an operator on one of the few routes an operator may use — so a route added
later is admin-only until it is listed here. The routes then check the finer rights with
the functions below: which actions an operator may run, whose executions it may cancel,
whose datastore values a key may read, write or decrypt.

Every refusal is a 403 whose message names the key, its role and the missing grant.
With auth disabled there is no key (None) and everything is allowed, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from engine.errors import AuthError
from engine.model.apikeys import ApiKey
from engine.model.roles import ADMIN, OBSERVER, OPERATOR, WEBHOOK

_READS = frozenset({"GET", "HEAD", "OPTIONS"})
# (method, route) an operator may write to; the handler checks grants and ownership. A
# route joins only with those checks (a re-run: require_run and require_owner).
_OPERATOR_WRITES = frozenset(
    {
        ("POST", "/api/v1/executions"),
        ("POST", "/api/v1/executions/"),
        ("PUT", "/api/v1/executions/{id}"),
        ("DELETE", "/api/v1/executions/{id}"),
        ("POST", "/api/v1/triggerinstances/{id}/re_emit"),
        ("POST", "/api/v1/executions/{id}/re_run"),
        ("POST", "/api/v1/executions/{id}/re_run/"),
        ("PUT", "/api/v1/keys/{name}"),
        # An inquiry's own `users` and `roles` say who may answer it (inquiries_api).
        ("PUT", "/api/v1/inquiries/{id}"),
        ("PUT", "/api/v1/inquiries/{id}/"),
        ("DELETE", "/api/v1/keys/{name}"),
    }
)
# What the guard registers last to answer unknown paths (404/405): nothing to protect.
_UNKNOWN_ROUTE = "/{unknown_path}"


def denied(key: ApiKey, what: str, why: str) -> AuthError:
    return AuthError(f"key {key.name!r} (role {key.role}) may not {what}: {why}", 403)


def check_api_rights(request: web.Request, key: ApiKey) -> None:
    """Refuse what the key's role never allows on the API (403 naming what is missing)."""
    if key.role == WEBHOOK or key.webhooks or key.triggers:
        scope = ", ".join(key.webhooks or key.triggers) or "every webhook"
        raise denied(
            key,
            "use the API",
            f"it is limited to posting webhooks ({scope}); the API needs an admin, "
            "operator or observer key",
        )
    if request.method in _READS or key.role == ADMIN:
        return
    route = _route(request)
    if route == _UNKNOWN_ROUTE:
        return
    what = f"{request.method} {request.path}"
    operators_may = (request.method, route) in _OPERATOR_WRITES
    if key.role == OPERATOR and operators_may:
        return
    if key.role == OBSERVER and operators_may:
        raise denied(key, what, "the observer role only reads (GET); this needs an operator")
    raise denied(key, what, "this needs an admin key")


def _route(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    return None if resource is None else resource.canonical


def require_admin(key: ApiKey | None, what: str) -> None:
    if key is not None and key.role != ADMIN:
        raise denied(key, what, "this needs an admin key")


# --- running and controlling executions ---------------------------------------------------


def require_run(key: ApiKey | None, ref: str) -> None:
    """An admin runs anything; an operator what its grants cover (by pack or action ref)."""
    if key is None or key.role == ADMIN:
        return
    if key.role != OPERATOR:
        raise denied(key, f"run {ref}", "running actions needs an operator or admin key")
    if not key.grants.covers(ref):
        pack = ref.split(".", 1)[0]
        raise denied(
            key,
            f"run {ref}",
            f"no grant for pack {pack!r} or action {ref!r} (grants: {key.grants.describe()})",
        )


def execution_user(context: Mapping[str, Any] | None) -> str | None:
    user = (context or {}).get("user")
    return user if isinstance(user, str) else None


def require_owner(key: ApiKey | None, verb: str, execution_id: str, context: Mapping) -> None:
    """An admin controls any execution; an operator only those it requested."""
    if key is None or key.role == ADMIN:
        return
    what = f"{verb} execution {execution_id}"
    if key.role != OPERATOR:
        raise denied(key, what, "this needs an operator or admin key")
    owner = execution_user(context)
    if owner != key.name:
        by = f"user {owner!r}" if owner else "no named user"
        raise denied(
            key,
            what,
            f"it was requested by {by}, not by {key.name!r}; an operator controls only its "
            "own executions",
        )


# --- the datastore -----------------------------------------------------------------------


def sees_user(key: ApiKey | None, user: str | None) -> bool:
    """Whether `key` may see values of the user scope owned by `user`."""
    return key is None or key.role == ADMIN or user == key.name


def require_user(key: ApiKey | None, verb: str, user: str) -> None:
    if not sees_user(key, user):
        assert key is not None
        raise denied(
            key,
            f"{verb} user-scoped values of user {user!r}",
            f"only that user ({user!r}) or an admin key may",
        )


def require_kv_write(key: ApiKey | None, verb: str, name: str, scope: str, user: str | None):
    """System values: admin only (every rule reads them). User values: that user, unless
    it is only an observer, or an admin."""
    if key is None or key.role == ADMIN:
        return
    what = f"{verb} datastore key {name!r} in {scope}"
    if user is None:
        raise denied(key, what, "the system scope changes what every rule sees: admin only")
    require_user(key, verb, user)
    if key.role != OPERATOR:
        raise denied(key, what, "the observer role only reads; this needs an operator")


def may_decrypt(key: ApiKey | None, user: str | None) -> bool:
    """Secrets are revealed to an admin, and in the user scope to their own user."""
    return key is None or key.role == ADMIN or (user is not None and user == key.name)
