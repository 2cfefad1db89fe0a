"""Re-run an execution: `POST /api/v1/executions/{id}/re_run` (what `st2 execution
re-run` sends: `{"parameters": {...}, "tasks": [...], "reset": [...], "delay": 0}`).

The new execution runs the same action with the original parameters, the given ones on
top, and names the original in `context["re-run"]` as StackStorm does. Re-running a
workflow from chosen tasks (`tasks`, `reset`) is not supported yet and is refused.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.errors import ActionError, IngestError
from engine.http import rbac
from engine.http.api_json import read_json
from engine.http.auth import API_KEY
from engine.http.context import RUNTIME, json_response
from engine.http.executions_api import API_USER, execution_api
from engine.http.guard import guarded
from engine.model.records import NewExecution


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/executions/{id}/re_run", guarded(re_run))
    app.router.add_post("/api/v1/executions/{id}/re_run/", guarded(re_run))


async def re_run(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    try:
        body = await read_json(request) if request.can_read_body else {}
    except ValueError:
        raise IngestError("the request body must be JSON") from None
    if not isinstance(body, dict):
        raise IngestError("the request body must be a JSON object")
    given = body.get("parameters") or {}
    if not isinstance(given, dict):
        raise IngestError('"parameters" must be a JSON object')
    if body.get("tasks") or body.get("reset"):
        raise IngestError(
            "re-running a workflow from chosen tasks is not supported yet: "
            "re-run it whole (no tasks)",
            501,
        )
    original = await runtime.store.get_execution(request.match_info["id"])
    key = request.get(API_KEY)
    try:
        action = runtime.packs.action(original.action)
    except ActionError as exc:
        raise IngestError(str(exc)) from None
    rbac.require_run(key, action.ref)
    rbac.require_owner(key, "re-run", original.id, original.context)
    # The original's secret values stay sealed: the store seals only what is not yet.
    parameters = {**(original.parameters or {}), **given}
    try:
        action.prepare_parameters(runtime.sealer.unseal(parameters))
    except ActionError as exc:
        raise IngestError(str(exc)) from None
    user = key.name if key is not None and not key.admin else None
    context: dict[str, Any] = {
        "user": user or (original.context or {}).get("user") or API_USER,
        "re-run": {"ref": original.id},
    }
    record = await runtime.store.create_execution(
        NewExecution(action=action.ref, parameters=parameters, context=context)
    )
    return json_response(execution_api(runtime, record), 201)
