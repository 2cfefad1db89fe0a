"""REST for outbound webhooks: subscriptions to engine events, deliveries, and the JWKS.

`/api/v1/events/webhooks` (Hyperledger Identus' shape: url, customHeaders, events) and
`/api/v1/deliveries` need an admin API key: a subscription receives every event's data.
`/.well-known/jwks.json` is public: receivers verify rsa-sha256 signatures with it.
A subscription URL passes the SSRF guard when it is saved (a clear 400) and again on
every delivery.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from engine.errors import ConfigError, IngestError, OutboundError, StoreError
from engine.http.api_json import read_json
from engine.http.auth import GATEKEEPER
from engine.http.context import RUNTIME, json_response
from engine.http.guard import guarded
from engine.model.records import utcnow
from engine.outbound import subscriptions
from engine.outbound.sender import KeyRingProvider
from engine.outbound.ssrf import DestinationGuard
from engine.store.codec import parse_time

KEYRINGS = web.AppKey("outbound_keyrings", KeyRingProvider)
DELIVERY_FILTERS = ("subscription", "status", "event_type", "event", "created_gt", "created_lt")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def add_routes(app: web.Application) -> None:
    app[KEYRINGS] = app[RUNTIME].keyrings
    base = "/api/v1/events/webhooks"
    for path in (base, base + "/"):
        app.router.add_post(path, guarded(create))
        app.router.add_get(path, guarded(list_subscriptions))
    app.router.add_get(base + "/{id}", guarded(get_subscription))
    app.router.add_patch(base + "/{id}", guarded(update_subscription))
    app.router.add_delete(base + "/{id}", guarded(delete_subscription))
    app.router.add_post(base + "/{id}/rotate-secret", guarded(rotate_secret))
    app.router.add_post(base + "/{id}/recover", guarded(recover))
    for path in ("/api/v1/deliveries", "/api/v1/deliveries/"):
        app.router.add_get(path, guarded(list_deliveries))
    app.router.add_get("/api/v1/deliveries/{id}", guarded(get_delivery))
    app.router.add_post("/api/v1/deliveries/{id}/redeliver", guarded(redeliver))
    app.router.add_get("/.well-known/jwks.json", guarded(jwks))
    app.router.add_post("/api/v1/events/signing-keys/rotate", guarded(rotate_signing_key))


async def _admin(request: web.Request) -> None:
    await request.app[GATEKEEPER].require_key(request, admin=True)


async def _body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    try:
        data = await read_json(request, {} if optional else None)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise IngestError("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise IngestError("the body must be a JSON object")
    return data


async def _checked_url(request: web.Request, url: str) -> None:
    guard = DestinationGuard(request.app[RUNTIME].settings.outbound.allow_private)
    try:
        await guard.check_url(url)
    except OutboundError as exc:  # DestinationRefused, HostNotResolved
        raise IngestError(f"url: {exc}", 400) from None


def _bad_request(exc: ConfigError) -> IngestError:
    return IngestError(str(exc), 400)


# --- subscriptions ----------------------------------------------------------------------


async def create(request: web.Request) -> web.Response:
    await _admin(request)
    try:
        subscription, secret = subscriptions.new_subscription(await _body(request))
    except ConfigError as exc:
        raise _bad_request(exc) from None
    await _checked_url(request, subscription.url)
    stored = await request.app[RUNTIME].store.create_subscription(subscription)
    return json_response(stored.to_api(secret=secret), 201)


async def list_subscriptions(request: web.Request) -> web.Response:
    await _admin(request)
    found = await request.app[RUNTIME].store.list_subscriptions()
    return json_response([s.to_api() for s in found], headers={"X-Total-Count": str(len(found))})


async def get_subscription(request: web.Request) -> web.Response:
    await _admin(request)
    found = await request.app[RUNTIME].store.get_subscription(request.match_info["id"])
    return json_response(found.to_api())


async def update_subscription(request: web.Request) -> web.Response:
    await _admin(request)
    store = request.app[RUNTIME].store
    current = await store.get_subscription(request.match_info["id"])
    try:
        changes = subscriptions.changes(await _body(request), current)
    except ConfigError as exc:
        raise _bad_request(exc) from None
    if "url" in changes:
        await _checked_url(request, changes["url"])
    updated = await store.update_subscription(current.id, changes)
    return json_response(updated.to_api())


async def delete_subscription(request: web.Request) -> web.Response:
    await _admin(request)
    await request.app[RUNTIME].store.delete_subscription(request.match_info["id"])
    return web.Response(status=204)


async def rotate_secret(request: web.Request) -> web.Response:
    """A new secret; the old one keeps signing beside it for `grace` seconds."""
    await _admin(request)
    runtime = request.app[RUNTIME]
    data = await _body(request, optional=True)
    unknown = sorted(set(data) - {"secret", "grace"})
    if unknown:
        raise IngestError(f"unknown field {unknown[0]!r}; known fields: grace, secret")
    grace = data.get("grace", runtime.settings.outbound.secret_rotation_grace)
    if isinstance(grace, bool) or not isinstance(grace, int | float) or grace < 0:
        raise IngestError("'grace' must be a number of seconds, 0 or more")
    current = await runtime.store.get_subscription(request.match_info["id"])
    try:
        secrets, secret = subscriptions.rotated_secrets(
            current, data.get("secret"), float(grace), utcnow()
        )
    except ConfigError as exc:
        raise _bad_request(exc) from None
    updated = await runtime.store.update_subscription(current.id, {"secrets": secrets})
    return json_response(updated.to_api(secret=secret))


async def recover(request: web.Request) -> web.Response:
    """Send again every failed delivery since `since` (Svix's recover)."""
    await _admin(request)
    data = await _body(request)
    if "since" not in data:
        raise IngestError('\'since\' is required: {"since": "2024-05-01T00:00:00Z"}')
    try:
        since = parse_time(data["since"], "since")
    except StoreError as exc:
        raise IngestError(str(exc), 400) from None
    recovered = await request.app[RUNTIME].store.recover_deliveries(request.match_info["id"], since)
    return json_response(
        {"recovered": len(recovered), "deliveries": [d.to_api() for d in recovered]}, 202
    )


# --- deliveries ---------------------------------------------------------------------------


async def list_deliveries(request: web.Request) -> web.Response:
    await _admin(request)
    query = request.query
    unknown = sorted(set(query) - {*DELIVERY_FILTERS, "limit", "offset"})
    if unknown:
        raise IngestError(
            f"unknown filter {unknown[0]!r}; known: {', '.join(DELIVERY_FILTERS)}, limit, offset"
        )
    try:
        limit = int(query.get("limit", DEFAULT_LIMIT))
        offset = int(query.get("offset", 0))
    except ValueError:
        raise IngestError("limit and offset must be integers") from None
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise IngestError(f"limit must be 1..{MAX_LIMIT} and offset 0 or more")
    filters = {name: query[name] for name in DELIVERY_FILTERS if name in query}
    try:
        page = await request.app[RUNTIME].store.list_deliveries(filters, limit, offset)
    except StoreError as exc:
        if "filter" in str(exc):
            raise IngestError(str(exc), 400) from None
        raise
    return json_response(
        [d.to_api() for d in page.items], headers={"X-Total-Count": str(page.total)}
    )


async def get_delivery(request: web.Request) -> web.Response:
    await _admin(request)
    found = await request.app[RUNTIME].store.get_delivery(request.match_info["id"])
    return json_response(found.to_api())


async def redeliver(request: web.Request) -> web.Response:
    await _admin(request)
    new = await request.app[RUNTIME].store.redeliver(request.match_info["id"])
    return json_response(new.to_api(), 202)


# --- keys ---------------------------------------------------------------------------------


async def jwks(request: web.Request) -> web.Response:
    keys = await request.app[KEYRINGS].jwks()
    return json_response(keys, headers={"Cache-Control": "public, max-age=300"})


async def rotate_signing_key(request: web.Request) -> web.Response:
    """A new rsa-sha256 signing key; the old public key stays published for the grace."""
    await _admin(request)
    keyrings = request.app[KEYRINGS]
    if keyrings.pem_file is not None:
        raise IngestError(
            "the signing key is the configured PEM outbound.signing_key_pem: rotate it by "
            "configuring another file",
            409,
        )
    kid = await keyrings.rotate()
    return json_response({"kid": kid, "jwks": await keyrings.jwks()}, 201)
