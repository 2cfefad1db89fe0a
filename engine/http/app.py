"""The one aiohttp app factory: routes, JSON errors, and the process's roles.

Roles run as background tasks started and stopped in `cleanup_ctx`, so tests with
aiohttp's test client run the same code as `hookyard serve`. Route modules take what
they share (app keys, response helpers) from engine.http.context, never from here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from engine.config import Settings
from engine.errors import StoreError
from engine.http import (
    actions_api,
    apikeys_api,
    auth,
    datastore_api,
    enforcements_api,
    executions_api,
    expect,
    inquiries_api,
    metrics_api,
    operations_api,
    outbound_api,
    policies_api,
    purge_api,
    rerun_api,
    rules_api,
    stream_api,
    trigger_instances_api,
    triggers_api,
    user_api,
    webhooks,
    webhooks_api,
)
from engine.http.context import RUNTIME, json_response
from engine.http.guard import add_unknown_route, check_all_guarded, guarded
from engine.ingest.writer import IngestProcess
from engine.process.runtime import Runtime
from engine.store import create_store
from engine.workers import rule_sync
from engine.workers.evaluator import EvaluatorPool
from engine.workers.lifecycle import role_contexts

log = logging.getLogger(__name__)


def create_app(settings: Settings, runtime: Runtime | None = None) -> web.Application:
    """The application for `settings`; its store opens and roles start on app startup."""
    # No middlewares: each route's handler is wrapped (engine.http.guard explains why).
    # Bodies are read as sent, and decoded by the routes within their limits
    # (engine.http.content_coding): aiohttp's own decompression is off.
    app = web.Application(
        client_max_size=settings.ingest.max_body, handler_args={"auto_decompress": False}
    )
    runtime = runtime or Runtime(settings, create_store(settings.store, settings.resolve_path(".")))
    app[RUNTIME] = runtime
    app.cleanup_ctx.append(_store_context)
    rule_sync.install(app, runtime)  # rules stored through the API, after file rules load
    # Webhook definitions are checked here (a bad one fails the start); keys after open.
    auth.install(app, settings, runtime.store)
    app.router.add_get("/health", guarded(health))
    app.router.add_get("/ready", guarded(ready))
    if "api" in settings.roles:
        for routes in (
            webhooks,
            webhooks_api,
            trigger_instances_api,
            triggers_api,
            enforcements_api,
            rules_api,
            executions_api,
            actions_api,
            apikeys_api,
            datastore_api,
            outbound_api,
            operations_api,
            policies_api,
            rerun_api,
            user_api,
            purge_api,
            inquiries_api,
            stream_api,
        ):
            routes.add_routes(app)
    metrics_api.install(app)
    for context in role_contexts(settings.roles, runtime):
        app.cleanup_ctx.append(context)
    add_unknown_route(app)
    expect.install(app)
    check_all_guarded(app, unguarded={webhooks.receive})
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
