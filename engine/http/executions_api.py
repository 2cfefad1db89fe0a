"""Executions under /api/v1/executions in StackStorm's shapes: list, get, run, cancel.

`POST /api/v1/executions` queues an execution the way `st2 run` sends it; the actions
worker runs it. Secret parameters are masked in every execution this API returns.

Cancel: `DELETE /api/v1/executions/{id}` (what `st2 execution cancel` sends) or
`PUT /api/v1/executions/{id}` with `{"status": "canceled"}`; pause and resume a workflow
with `{"status": "pausing"}` / `{"status": "resuming"}` (`st2 execution pause`). Answers
as StackStorm does: 200 with the execution (now `canceled`, or `canceling` while its
worker stops a running one); 200 with a `faultstring` when it has already finished; 404
when there is no such execution.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from engine.errors import ActionError, Conflict, IngestError
from engine.http import rbac, shapes
from engine.http.api_json import read_json
from engine.http.auth import API_KEY
from engine.http.context import RUNTIME, json_response
from engine.http.execution_tree import canceling_descendants, children_ids, descendants
from engine.http.guard import guarded
from engine.http.paging import add_get_both_slashes, filters, paging
from engine.model.records import (
    CANCELED,
    CANCELING,
    DELAYED,
    INQUIRY_PENDING,
    REQUESTED,
    SCHEDULED,
    NewExecution,
)
from engine.process.runtime import Runtime
from engine.secrets.sealing import is_sealed
from engine.store.ops.workflow_pauses import PAUSING, RESUMING
from engine.workers.actions import CANCEL_REQUESTED

MASK = "********"
API_USER = "api"
EXECUTION_FILTERS = (
    "action",
    "status",
    "trigger_instance",
    "rule",
    "parent",
    "timestamp_gt",
    "timestamp_lt",
)


def add_routes(app: web.Application) -> None:
    add_get_both_slashes(app, "/api/v1/executions", list_executions)
    app.router.add_get("/api/v1/executions/{id}", guarded(get_execution))
    add_get_both_slashes(app, "/api/v1/executions/{id}/children", list_children)
    app.router.add_post("/api/v1/executions", guarded(create_execution))
    app.router.add_post("/api/v1/executions/", guarded(create_execution))
    app.router.add_delete("/api/v1/executions/{id}", guarded(cancel_execution))
    app.router.add_put("/api/v1/executions/{id}", guarded(update_execution))


def execution_api(runtime: Runtime, record, children: list[str] | None = None) -> dict[str, Any]:
    """An execution with its action's API shape and secret parameters masked."""
    action_api: dict[str, Any] = {"ref": record.action, "runner_type": None}
    secrets: frozenset[str] = frozenset()
    if runtime.action_known(record.action):
        action = runtime.packs.action(record.action)
        action_api = action.to_api()
        secrets = action.secret_parameters
    data = shapes.execution(record, action_api, children)
    if isinstance(data["parameters"], dict):
        # Sealed values (engine.secrets.sealing) are masked too, should the action that
        # declared them secret be gone.
        data["parameters"] = {
            name: MASK if (name in secrets and value is not None) or is_sealed(value) else value
            for name, value in data["parameters"].items()
        }
    return data


async def list_executions(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    limit, offset = paging(request.query)
    page = await runtime.store.list_executions(
        filters(request.query, EXECUTION_FILTERS), limit, offset
    )
    return json_response(
        [execution_api(runtime, item, await children_ids(runtime, item)) for item in page.items],
        headers={"X-Total-Count": str(page.total)},
    )


async def get_execution(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    record = await runtime.store.get_execution(request.match_info["id"])
    return json_response(execution_api(runtime, record, await children_ids(runtime, record)))


async def list_children(request: web.Request) -> web.Response:
    """`GET /api/v1/executions/{id}/children?depth=N` (-1: every level): the task runs of
    a workflow and, deeper, of its subworkflows, parents before their children."""
    runtime = request.app[RUNTIME]
    root = await runtime.store.get_execution(request.match_info["id"])
    try:
        depth = int(request.query.get("depth", "1"))
    except ValueError:
        raise IngestError('"depth" must be an integer (-1: every level)') from None
    found = await descendants(runtime, root, depth)
    return json_response(
        [execution_api(runtime, item, await children_ids(runtime, item)) for item in found]
    )


async def create_execution(request: web.Request) -> web.Response:
    """`st2 run` sends {"action": ref, "parameters": {...}, "user": ...}."""
    runtime = request.app[RUNTIME]
    body = await _json_object(request)
    ref = body.get("action")
    if not isinstance(ref, str) or not ref:
        raise IngestError('an execution needs "action": the action ref, e.g. "core.local"')
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise IngestError('"parameters" must be a JSON object')
    key = request.get(API_KEY)
    try:
        action = runtime.packs.action(ref)
    except ActionError as exc:
        raise IngestError(str(exc)) from None
    rbac.require_run(key, action.ref)
    try:
        # Validate now so the caller hears about a bad parameter at once, not later.
        action.prepare_parameters(parameters)
    except ActionError as exc:
        raise IngestError(str(exc)) from None
    if key is not None and not key.admin:
        # Only an admin may act for another user or attach a context (which could claim
        # a rule or trigger instance caused the execution): others run as themselves.
        context: dict[str, Any] = {"user": key.name}
    else:
        context = {"user": body.get("user") or API_USER}
        if isinstance(body.get("context"), dict):
            context = {**body["context"], **context}
    record = await runtime.store.create_execution(
        NewExecution(action=action.ref, parameters=parameters, context=context)
    )
    return json_response(execution_api(runtime, record), 201)


async def update_execution(request: web.Request) -> web.Response:
    try:
        body = await read_json(request)
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    wanted = body.get("status") if isinstance(body, dict) and set(body) == {"status"} else None
    if wanted == CANCELED:
        return await cancel_execution(request)
    if wanted in (PAUSING, RESUMING):
        return await pause_or_resume(request, wanted)
    raise IngestError(
        "an execution can only be updated to cancel, pause or resume it: send "
        '{"status": "canceled"}, {"status": "pausing"} or {"status": "resuming"}'
    )


async def pause_or_resume(request: web.Request, wanted: str) -> web.Response:
    """StackStorm's `st2 execution pause|resume`: a workflow, with its subworkflows."""
    runtime = request.app[RUNTIME]
    execution_id = request.match_info["id"]
    key = request.get(API_KEY)
    verb = "pause" if wanted == PAUSING else "resume"
    if key is not None:
        current = await runtime.store.get_execution(execution_id)
        rbac.require_owner(key, verb, execution_id, current.context)
    try:
        if wanted == PAUSING:
            execution, _ = await runtime.store.request_pause(execution_id)
        else:
            execution, _ = await runtime.store.request_resume(execution_id)
    except Conflict as exc:
        raise IngestError(str(exc), 409) from None
    return json_response(execution_api(runtime, execution))


async def cancel_execution(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    execution_id = request.match_info["id"]
    key = request.get(API_KEY)
    if key is not None:
        current = await runtime.store.get_execution(execution_id)
        rbac.require_owner(key, "cancel", execution_id, current.context)
    execution, previous = await runtime.store.request_cancel(execution_id)
    if execution.status == CANCELING:
        runtime.observe(CANCEL_REQUESTED, execution.id)
        # A workflow's running task runs were set canceling with it (the store cascades);
        # those this process runs stop now instead of at their next heartbeat.
        for child in await canceling_descendants(runtime, execution.id):
            runtime.observe(CANCEL_REQUESTED, child)
    elif previous == CANCELED:
        return json_response({"faultstring": 'Action is already in "canceled" state.'})
    elif previous not in (REQUESTED, SCHEDULED, DELAYED, INQUIRY_PENDING):
        return json_response({"faultstring": f"Action cannot be canceled. State = {previous}."})
    return json_response(execution_api(runtime, execution))


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await read_json(request)
    except ValueError:
        raise IngestError("the request body must be JSON") from None
    if not isinstance(body, dict):
        raise IngestError("the request body must be a JSON object")
    return body
