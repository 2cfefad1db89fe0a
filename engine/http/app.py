"""The one aiohttp app factory: routes, JSON errors, and the process's roles.

Roles run as background tasks started and stopped in `cleanup_ctx`, so tests with
aiohttp's test client run the same code as `hookyard serve`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, datetime
from typing import Any

from aiohttp import web

from engine.config import Settings
from engine.errors import (
    AuthError,
    EngineError,
    IngestError,
    NotFound,
    StoreBusy,
    StoreError,
)
from engine.ingest_process import IngestProcess
from engine.runtime import Runtime
from engine.store import UnstorableValue, create_store

log = logging.getLogger(__name__)

RUNTIME = web.AppKey("runtime", Runtime)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# A store error's own text names database files, hosts and driver details: it is logged,
# and the client gets only these.
STORE_BUSY = "the store is busy; retry later"
STORE_UNAVAILABLE = "the store is unavailable; retry later"


class BacklogFull(StoreBusy):
    """Raised when ingest sheds load: too many trigger instances wait to be processed."""


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None):
    return web.Response(
        body=json.dumps(data, default=_json_default).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(message: str, status: int, headers: dict[str, str] | None = None):
    # `faultstring` is what StackStorm's API and the st2 CLI use for error messages.
    return json_response({"faultstring": message}, status, headers)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def error_response_for(request: web.Request, exc: Exception) -> web.Response | None:
    """The JSON error answer for `exc`, or None for what is not an error answer (a
    redirect, a bug: re-raised by the caller)."""
    if isinstance(exc, IngestError):
        if isinstance(exc, AuthError) and exc.status == 401:
            return error_response(str(exc), 401, {"WWW-Authenticate": exc.challenge})
        return error_response(str(exc), exc.status)
    if isinstance(exc, NotFound):
        return error_response(str(exc), 404)
    if isinstance(exc, UnstorableValue):
        return error_response(f"the body cannot be stored: {exc}", 400)
    if isinstance(exc, BacklogFull):  # about the engine's queue, not the database: said as is
        retry = max(1, round(exc.retry_after))
        return error_response(f"{exc}; retry later", 503, {"Retry-After": str(retry)})
    if isinstance(exc, StoreBusy):
        log.warning("store busy on %s %s: %s", request.method, request.path, exc)
        retry = max(1, round(exc.retry_after))
        return error_response(STORE_BUSY, 503, {"Retry-After": str(retry)})
    if isinstance(exc, StoreError):
        log.error("store error on %s %s: %s", request.method, request.path, exc)
        retry = request.app[RUNTIME].settings.ingest.retry_after
        return error_response(STORE_UNAVAILABLE, 503, {"Retry-After": str(retry)})
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return None
        message = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        return error_response(f"{message}: {request.method} {request.path}", exc.status)
    if isinstance(exc, EngineError):
        return error_response(str(exc), 400)
    return None


def create_app(settings: Settings, runtime: Runtime | None = None) -> web.Application:
    """The application for `settings`; its store opens and roles start on app startup."""
    from engine.http import auth
    from engine.http.guard import add_unknown_route, check_all_guarded, guarded

    # No middlewares: each route's handler is wrapped (engine.http.guard explains why).
    # Bodies are read as sent, and decoded by the routes within their limits
    # (engine.http.content_coding): aiohttp's own decompression is off.
    app = web.Application(
        client_max_size=settings.ingest.max_body, handler_args={"auto_decompress": False}
    )
    runtime = runtime or Runtime(settings, create_store(settings.store, settings.resolve_path(".")))
    app[RUNTIME] = runtime
    app.cleanup_ctx.append(_store_context)
    from engine.workers import rule_sync

    rule_sync.install(app, runtime)  # rules stored through the API, after file rules load
    # Webhook definitions are checked here (a bad one fails the start); keys after open.
    auth.install(app, settings, runtime.store)
    app.router.add_get("/health", guarded(health))
    app.router.add_get("/ready", guarded(ready))
    if "api" in settings.roles:
        from engine.http import actions_api, api, webhooks

        webhooks.add_routes(app)
        api.add_routes(app)
        actions_api.add_routes(app)
        from engine.http import apikeys_api

        apikeys_api.add_routes(app)
        from engine.http import keys_api

        keys_api.add_routes(app)
        from engine.http import outbound_api

        outbound_api.add_routes(app)
        from engine.http import cancel_api, rules_api

        rules_api.add_routes(app)
        cancel_api.add_routes(app)
    if "api" in settings.roles:
        from engine.http import operations_api

        operations_api.add_routes(app)
    from engine import metrics

    metrics.install(app)
    from engine.workers import role_contexts

    for context in role_contexts(settings.roles):
        app.cleanup_ctx.append(context)
    add_unknown_route(app)
    from engine.http import expect

    expect.install(app)
    from engine.http.webhooks import receive

    check_all_guarded(app, unguarded={receive})
    return app


async def _store_context(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    await runtime.store.open()
    try:
        runtime.load_rules()
        await _start_children(runtime)
    except BaseException:
        await runtime.store.close()
        raise
    try:
        yield
    finally:
        try:
            if runtime.ingest_process is not None:
                await runtime.ingest_process.close()
            if runtime.evaluator is not None:
                await runtime.evaluator.close()
        finally:
            await runtime.store.close()


async def _start_children(runtime: Runtime) -> None:
    """The ingest writer process (api role) and the rule evaluator processes (rules
    role), started together; the app serves once they run."""
    from engine.evaluator_process import EvaluatorPool

    settings = runtime.settings
    ingest = None
    if "api" in settings.roles and settings.ingest.writer_process:
        ingest = IngestProcess(settings, runtime.store)
    evaluator = EvaluatorPool(settings) if "rules" in settings.roles else None
    started = await asyncio.gather(
        *(child.start() for child in (ingest, evaluator) if child is not None),
        return_exceptions=True,
    )
    failure = next((result for result in started if isinstance(result, BaseException)), None)
    if failure is not None:
        for child in (ingest, evaluator):
            if child is not None:
                await child.close()
        raise failure
    runtime.ingest_process, runtime.evaluator = ingest, evaluator


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "alive"})


async def ready(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    problems = []
    if runtime.draining:
        problems.append("draining for shutdown")
    try:
        await runtime.store.ping()
    except StoreError as exc:
        log.error("readiness: store unreachable: %s", exc)
        problems.append("store unreachable")
    write_problem = runtime.store.write_problem()
    if write_problem is not None:
        log.error("readiness: the store refuses writes: %s", write_problem)
        problems.append("store refuses writes")
    problems.extend(runtime.worker_problems())
    if problems:
        return json_response({"ready": False, "problems": problems}, 503)
    return json_response({"ready": True, "roles": list(runtime.settings.roles)})
