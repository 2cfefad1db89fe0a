"""Who may post and read: API keys, per-webhook signatures and tokens, request limits.

`install(app, settings)` puts a `Gatekeeper` on the app and a start-up step that creates
and prints the first admin key on an empty store (or warns loudly when auth is disabled).
`check_request` limits header counts and requires a key for the API under /api/v1; every
route but the webhooks runs it (engine.http.guard).

Statuses: no credential, an unknown key or a bad signature/token → 401; a valid key that
is expired, disabled, or not allowed this webhook, trigger or — by its role
(engine.http.rbac) — this request → 403. Messages never contain a key, a secret or a
signature.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass

from aiohttp import web

from engine.config import Settings, load_settings
from engine.errors import AuthError, ConfigError, EngineError, IngestError
from engine.http import rbac
from engine.http.context import RUNTIME
from engine.http.hookdefs import WebhookDefinition, load_definitions
from engine.http.key_cache import ApiKeyCache
from engine.http.rate_limits import RateLimit, RateLimits
from engine.model.apikeys import ApiKey, key_prefix, new_api_key
from engine.model.records import utcnow
from engine.model.roles import posts_webhooks
from engine.packs import PackSet
from engine.store.base import Store
from engine.support.logs import register_secrets

log = logging.getLogger(__name__)

KEY_HEADER = "St2-Api-Key"
KEY_QUERY = "st2-api-key"
_WHERE_KEYS_GO = (
    f"send one in the {KEY_HEADER} header, the {KEY_QUERY} query parameter or Authorization: Bearer"
)


@dataclass(frozen=True)
class Caller:
    """Who a webhook request was accepted from."""

    key: ApiKey | None = None
    # The sender's delivery id from a verified signature (for dedupe).
    delivery_id: str | None = None


# A request to a hook that checks no credential (or with auth disabled).
ANONYMOUS = Caller()


class Gatekeeper:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.enabled = settings.auth.enabled
        self.max_headers = settings.ingest.max_headers
        self.store = store
        self.keys = ApiKeyCache(store.find_api_key)
        self.limits = RateLimits(store)
        self.definitions: dict[str, WebhookDefinition] = load_definitions(
            settings.webhooks, settings.config_file
        )
        self._register_secrets()

    def add_pack_definitions(self, specs) -> None:
        """Definitions from packs' webhooks/*.yaml (a name defined twice is an error)."""
        specs = list(specs)
        specs_by_name = {spec.name: spec for spec in specs}
        added = load_definitions({}, None, specs)
        for name, definition in added.items():
            if name in self.definitions:
                raise ConfigError(
                    f"{_pack_file(specs_by_name, name)}: webhook {name!r} is also defined in "
                    "the config file's webhooks; a hook has one definition"
                )
            self.definitions[name] = definition
        self._register_secrets()

    def reload_definitions(self, settings: Settings, packs: PackSet) -> str | None:
        """Rebuild the definitions from the config file and `packs`; if they do not build,
        keep the current ones and return the problem."""
        try:
            webhooks = settings.webhooks
            if settings.config_file:
                webhooks = load_settings(settings.config_file).webhooks
            specs = [spec for pack in packs.packs.values() for spec in pack.webhooks.values()]
            definitions = load_definitions(webhooks, settings.config_file, specs)
        except EngineError as exc:
            log.error("reload: webhook definitions kept as they were: %s", exc)
            return f"webhook definitions not reloaded (previous ones kept): {exc}"
        for definition in definitions.values():
            register_secrets(*definition.secrets)
        self.definitions = definitions
        return None

    def _register_secrets(self) -> None:
        for definition in self.definitions.values():
            register_secrets(*definition.secrets)

    def definition(self, name: str) -> WebhookDefinition:
        return self.definitions.get(name) or WebhookDefinition(name)

    # --- API keys ---------------------------------------------------------------------

    async def api_key(self, presented: str | None) -> ApiKey:
        """The valid, enabled, unexpired key record for `presented`, or AuthError."""
        if not presented:
            raise AuthError(f"an API key is required: {_WHERE_KEYS_GO}", 401)
        prefix = key_prefix(presented)
        record = await self.keys.find(prefix) if prefix else None
        if record is None or not record.matches(presented):
            raise AuthError("invalid API key", 401)
        if not record.enabled:
            raise AuthError(f"API key {record.name!r} (id {record.id}) is disabled", 403)
        if record.expired(utcnow()):
            raise AuthError(
                f"API key {record.name!r} (id {record.id}) expired at "
                f"{record.expires_at.isoformat()}; extend it or create another",
                403,
            )
        return record

    async def require_key(self, request: web.Request, *, admin: bool = False) -> ApiKey | None:
        """The request's key from the standard places (None when auth is disabled)."""
        if not self.enabled:
            return None
        record = await self.api_key(standard_key(request))
        if admin:
            rbac.require_admin(record, f"{request.method} {request.path}")
        return record

    # --- rate limits ------------------------------------------------------------------

    async def check_rates(self, hook: WebhookDefinition | None, key: ApiKey | None) -> None:
        """RateLimited (429) when the hook's or the key's rate limit is used up."""
        if hook is not None and hook.rate_limit is not None:
            await self.limits.check(
                f"hook:{hook.name}", f"webhook {hook.name!r}", hook.rate_limit,
                ("webhook", hook.name),
            )  # fmt: skip
        if key is not None and key.rate_limit:
            await self.limits.check(
                f"key:{key.id}", f"API key {key.name!r}",
                RateLimit(key.rate_limit, key.rate_burst), ("api_key", key.name),
            )  # fmt: skip

    # --- webhooks ---------------------------------------------------------------------

    async def check_webhook(
        self,
        request: web.Request,
        definition: WebhookDefinition,
        raw: bytes,
        *,
        path_key: str | None = None,
        body: object = None,
    ) -> Caller:
        """Verify the request for `definition` over the raw body; AuthError if refused."""
        if not self.enabled or definition.auth == "none":
            return ANONYMOUS
        if definition.auth == "signature":
            assert definition.signature is not None
            verified = definition.signature.verify(request.headers, raw, time.time())
            return Caller(delivery_id=verified.delivery_id)
        if definition.auth == "jwt":
            assert definition.jwt is not None
            definition.jwt.verify(request.headers)
            return Caller()
        presented = _placed_key(request, definition, path_key, body) or standard_key(request)
        record = await self.api_key(presented)
        if record.webhooks and definition.name not in record.webhooks:
            raise AuthError(f"this API key may not post to webhook {definition.name!r}", 403)
        if not posts_webhooks(record.role, migrated=record.role_migrated):
            raise rbac.denied(
                record,
                f"post to webhook {definition.name!r}",
                "the observer role only reads the API; posting needs a webhook, operator "
                "or admin key",
            )
        return Caller(key=record)

    @staticmethod
    def check_fires(caller: Caller, fires: Collection[str]) -> None:
        """403 unless the caller's key may fire one of `fires` (trigger types, rule refs)."""
        key = caller.key
        if key is None or not key.triggers:
            return
        if not set(key.triggers) & set(fires):
            shown = ", ".join(sorted(fires)[:3]) or "nothing"
            raise AuthError(f"this API key may not fire {shown}", 403)


def _pack_file(specs_by_name, name: str) -> str:
    spec = specs_by_name[name]
    return spec.source or f"pack {spec.pack}"


def standard_key(request: web.Request) -> str | None:
    """A key in St2-Api-Key, ?st2-api-key= or Authorization: Bearer, as StackStorm reads."""
    header = request.headers.get(KEY_HEADER)
    if header:
        return header.strip()
    query = request.query.get(KEY_QUERY)
    if query:
        return query.strip()
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _placed_key(
    request: web.Request, definition: WebhookDefinition, path_key: str | None, body: object
) -> str | None:
    placement = definition.apikey
    if placement is None:
        return None
    if placement.place == "path":
        return path_key
    if placement.place == "header":
        return request.headers.get(placement.name)
    if placement.place == "query":
        return request.query.get(placement.name)
    value = body.get(placement.name) if isinstance(body, Mapping) else None
    return value if isinstance(value, str) else None


# --- app wiring --------------------------------------------------------------------------

GATEKEEPER = web.AppKey("gatekeeper", Gatekeeper)


def install(app: web.Application, settings: Settings, store: Store) -> None:
    """Build the webhook definitions now (bad ones fail the start) and add the start-up step."""
    app[GATEKEEPER] = Gatekeeper(settings, store)
    app.cleanup_ctx.append(_on_start)


async def _on_start(app: web.Application) -> AsyncIterator[None]:
    gate = app[GATEKEEPER]
    runtime = app[RUNTIME]
    gate.limits.observe = runtime.observe
    packs = getattr(runtime, "packs", None)
    if packs is not None:
        gate.add_pack_definitions(
            spec for pack in packs.packs.values() for spec in pack.webhooks.values()
        )
    if "api" in runtime.settings.roles:
        if gate.enabled:
            await create_first_admin_key(gate.store)
            await warn_about_migrated_keys(gate.store)
        else:
            log.warning(
                "AUTH IS DISABLED (auth.enabled: false): anyone who can reach this port may "
                "post to every webhook and read the API. Use this for local experiments only."
            )
    yield


async def create_first_admin_key(store: Store) -> str | None:
    """On an empty key table: create an admin key and print it once to stdout."""
    record, key = new_api_key("admin (created on first start)", admin=True)
    if not await store.create_api_key(record, only_if_none=True):
        return None
    print(
        "\n".join(
            (
                "",
                "An admin API key was created because the store had none. It is shown only",
                "this once; keep it somewhere safe:",
                "",
                f"    {key}",
                "",
                "Send it as the St2-Api-Key header (or Authorization: Bearer). Create more with",
                "    hookyard apikey create NAME --role operator --pack PACK   (or --webhook NAME)",
                "or POST /api/v1/apikeys with this key.",
                "",
            )
        ),
        file=sys.stdout,
        flush=True,
    )
    log.info("first admin API key created", extra={"api_key_id": record.id})
    return key


async def warn_about_migrated_keys(store: Store) -> None:
    """One warning naming the keys that became observers when roles arrived."""
    migrated = [key for key in await store.list_api_keys() if key.role_migrated]
    if not migrated:
        return
    named = ", ".join(f"{key.name!r} (id {key.id})" for key in migrated)
    log.warning(
        "API keys %s were unscoped non-admin keys and are now observers: they read the API "
        "and still post webhooks, but can no longer run actions, cancel, re-emit or write "
        "the datastore. "
        "Give each the role it needs: hookyard apikey set-role ID --role operator --pack "
        "PACK (or --role webhook to post only, --role observer to keep it read-only)",
        named,
        extra={"api_key_ids": [key.id for key in migrated]},
    )


async def check_request(request: web.Request) -> None:
    """The header limit, and for the API the caller's key and its rights (the key is put
    in request[API_KEY]). Run by engine.http.guard for every route but the webhooks'."""
    gate = request.app[GATEKEEPER]
    check_header_count(request, gate)
    if _needs_key(request):
        record = await gate.require_key(request)
        if record is not None:
            rbac.check_api_rights(request, record)
            await gate.check_rates(None, record)
        request[API_KEY] = record


def check_header_count(request: web.Request, gate: Gatekeeper) -> None:
    if len(request.headers) > gate.max_headers:
        raise IngestError(
            f"too many request headers: {len(request.headers)} (limit ingest.max_headers = "
            f"{gate.max_headers})",
            431,
        )


# The key a /api/v1 request was authenticated with (None when auth is disabled).
API_KEY = web.RequestKey("api_key", ApiKey | None)


def _needs_key(request: web.Request) -> bool:
    path = request.path
    if path.startswith("/stream/v1"):
        return True  # st2's stream service's paths (engine.http.stream_api)
    if not path.startswith("/api/v1"):
        return False  # /webhooks/* check their own hook's auth; /health, /ready are open
    # Posts to /api/v1/webhooks/<name> are webhooks: their hook's auth decides.
    return not (request.method == "POST" and path.startswith("/api/v1/webhooks/"))
