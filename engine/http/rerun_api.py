"""Re-run an execution: `POST /api/v1/executions/{id}/re_run` (what `st2 execution
re-run` sends: `{"parameters": {...}, "tasks": [...], "reset": [...], "delay": 0}`).

As StackStorm (st2api's ActionExecutionReRunController): the answer is a new execution of
the same action with the original parameters, the given ones on top, naming the original
in `context["re-run"]`. With `tasks`, an ended Orquesta workflow is re-run from those
tasks: the new execution continues the original's workflow state (engine.workflows.rerun;
the workflows worker applies it), so the tasks not named keep their results, and `reset`
names the with-items tasks whose every item runs again, not only the failed ones.

Refused with 400 as StackStorm refuses them: parameters together with tasks, `reset` not
within `tasks`, tasks of something that is not an Orquesta workflow; and, where StackStorm
would let the new execution fail, at once: task names the workflow never ran (400, named)
and a workflow that has not ended (409).
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
from engine.model.records import TERMINAL_EXECUTION_STATUSES, Execution, NewExecution
from engine.process.runtime import Runtime
from engine.workers.workflows import SEALED_STATE
from engine.workflows.rerun import unknown_tasks

ORQUESTA = "orquesta"
# A re-run may wait this long before it is claimed (StackStorm's `delay`, seconds).
MAX_DELAY = 86_400


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/executions/{id}/re_run", guarded(re_run))
    app.router.add_post("/api/v1/executions/{id}/re_run/", guarded(re_run))


def _names(body: dict[str, Any], field: str) -> list[str]:
    value = body.get(field) or []
    if not isinstance(value, list) or not all(isinstance(n, str) and n for n in value):
        raise IngestError(f'"{field}" must be a list of task names')
    return list(dict.fromkeys(value))


def _delay(body: dict[str, Any]) -> int:
    delay = body.get("delay") or 0
    if not isinstance(delay, int) or isinstance(delay, bool) or not 0 <= delay <= MAX_DELAY:
        raise IngestError(f'"delay" must be a whole number of seconds from 0 to {MAX_DELAY}')
    return delay


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
    tasks, reset, delay = _names(body, "tasks"), _names(body, "reset"), _delay(body)
    if tasks and given:
        raise IngestError(
            "Parameters override is not supported when re-running task(s) for a workflow."
        )
    stray = [name for name in reset if name not in tasks]
    if stray:
        raise IngestError(
            "List of tasks to reset does not match the tasks to rerun: " + ", ".join(stray)
        )
    original = await runtime.store.get_execution(request.match_info["id"])
    key = request.get(API_KEY)
    try:
        action = runtime.packs.action(original.action)
    except ActionError as exc:
        raise IngestError(str(exc)) from None
    rbac.require_run(key, action.ref)
    rbac.require_owner(key, "re-run", original.id, original.context)
    if tasks:
        if action.runner_type != ORQUESTA:
            # StackStorm's sentence first, then what this execution is and what works.
            raise IngestError(
                "Task option is only supported for Orquesta workflows: "
                f"{action.ref} runs with the {action.runner_type} runner, so execution "
                f"{original.id} can only be re-run whole (without tasks)."
            )
        await _check_rerunnable(runtime, original, tasks)
    # The original's secret values stay sealed: the store seals only what is not yet.
    parameters = {**(original.parameters or {}), **given}
    try:
        action.prepare_parameters(runtime.sealer.unseal(parameters))
    except ActionError as exc:
        raise IngestError(str(exc)) from None
    user = key.name if key is not None and not key.admin else None
    options: dict[str, Any] = {"ref": original.id}
    if tasks:
        options["tasks"] = tasks
    if reset:
        options["reset"] = reset
    context: dict[str, Any] = {
        "user": user or (original.context or {}).get("user") or API_USER,
        "re-run": options,
    }
    record = await runtime.store.create_execution(
        NewExecution(action=action.ref, parameters=parameters, context=context, delay=delay)
    )
    return json_response(execution_api(runtime, record), 201)


async def _check_rerunnable(runtime: Runtime, original: Execution, tasks: list[str]) -> None:
    """What would only fail the new execution later, answered now."""
    if original.status not in TERMINAL_EXECUTION_STATUSES:
        raise IngestError(
            f"execution {original.id!r} is {original.status}: a workflow is re-run from "
            "tasks once it has ended (wait for it, or cancel it first)",
            409,
        )
    state = await runtime.store.get_workflow_state(original.id)
    if state is None:
        raise IngestError(
            f"execution {original.id!r} never ran as a workflow: there are no tasks to "
            "re-run from; re-run it whole (no tasks)"
        )
    if SEALED_STATE in state:
        state = runtime.sealer.unseal_value(state[SEALED_STATE])
    missing = unknown_tasks(state, tasks)
    if missing:
        raise IngestError(
            "Unable to rerun workflow because one or more tasks is not found: " + ", ".join(missing)
        )
