"""Cancel an execution: `DELETE /api/v1/executions/{id}` (what `st2 execution cancel`
sends) or `PUT /api/v1/executions/{id}` with `{"status": "canceled"}`; pause and resume a
workflow with `{"status": "pausing"}` / `{"status": "resuming"}` (`st2 execution pause`).

Answers as StackStorm does: 200 with the execution (now `canceled`, or `canceling` while
its worker stops a running one); 200 with a `faultstring` when it has already finished;
404 when there is no such execution.
"""

from __future__ import annotations

import json

from aiohttp import web

from engine.errors import Conflict, IngestError
from engine.http import rbac
from engine.http.actions_api import MAX_CHILDREN, execution_api
from engine.http.api_json import read_json
from engine.http.auth import API_KEY
from engine.http.context import RUNTIME, json_response
from engine.http.guard import guarded
from engine.model.records import CANCELED, CANCELING, REQUESTED, SCHEDULED
from engine.store.ops.workflow_pauses import PAUSING, RESUMING
from engine.store.ops.workflows import MAX_CANCEL_DEPTH
from engine.workers.actions import CANCEL_REQUESTED


def add_routes(app: web.Application) -> None:
    app.router.add_delete("/api/v1/executions/{id}", guarded(cancel_execution))
    app.router.add_put("/api/v1/executions/{id}", guarded(update_execution))


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
        for child in await _canceling_descendants(runtime, execution.id):
            runtime.observe(CANCEL_REQUESTED, child)
    elif previous == CANCELED:
        return json_response({"faultstring": 'Action is already in "canceled" state.'})
    elif previous not in (REQUESTED, SCHEDULED):
        return json_response({"faultstring": f"Action cannot be canceled. State = {previous}."})
    return json_response(execution_api(runtime, execution))


async def _canceling_descendants(runtime, execution_id: str, depth: int = 0) -> list[str]:
    if depth >= MAX_CANCEL_DEPTH:
        return []
    page = await runtime.store.list_executions(
        {"parent": execution_id, "status": CANCELING}, MAX_CHILDREN, 0
    )
    found = []
    for child in page.items:
        found.append(child.id)
        found.extend(await _canceling_descendants(runtime, child.id, depth + 1))
    return found
