"""Actions, runners, packs and executions under /api/v1, in StackStorm's shapes.

`POST /api/v1/executions` queues an execution the way `st2 run` sends it; the actions
worker runs it. Secret parameters are masked in every execution this API returns.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.errors import ActionError, IngestError, NotFound
from engine.http import rbac, shapes
from engine.http.api import EXECUTION_FILTERS, filters, paging
from engine.http.api_json import read_json
from engine.http.auth import API_KEY
from engine.http.context import RUNTIME, json_response
from engine.http.guard import guarded
from engine.model.records import NewExecution, NewTriggerInstance
from engine.packs.action import ORQUESTA
from engine.process.runtime import Runtime
from engine.secrets.sealing import is_sealed

MASK = "********"
# Most task runs listed for one workflow (a with-items over many items has that many).
MAX_CHILDREN = 10_000
API_USER = "api"


def add_routes(app: web.Application) -> None:
    for path, handler in (
        ("/api/v1/actions", list_actions),
        ("/api/v1/actions/{ref}", get_action),
        ("/api/v1/runnertypes", list_runner_types),
        ("/api/v1/runnertypes/{name}", get_runner_type),
        ("/api/v1/packs", list_packs),
        ("/api/v1/packs/{ref}", get_pack),
    ):
        app.router.add_get(path, guarded(handler))
        app.router.add_get(path + "/", guarded(handler))
    # GET /api/v1/executions[/{id}] are served here too, with the action shape and masking.
    app.router.add_get("/api/v1/executions", guarded(list_executions))
    app.router.add_get("/api/v1/executions/", guarded(list_executions))
    app.router.add_get("/api/v1/executions/{id}", guarded(get_execution))
    app.router.add_get("/api/v1/executions/{id}/children", guarded(list_children))
    app.router.add_get("/api/v1/executions/{id}/children/", guarded(list_children))
    app.router.add_post("/api/v1/executions", guarded(create_execution))
    app.router.add_post("/api/v1/executions/", guarded(create_execution))
    app.router.add_post("/api/v1/triggerinstances/{id}/re_emit", guarded(re_emit))


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


async def list_actions(request: web.Request) -> web.Response:
    actions = request.app[RUNTIME].packs.actions()
    pack = request.query.get("pack")
    return json_response([a.to_api() for a in actions if not pack or a.pack == pack])


async def get_action(request: web.Request) -> web.Response:
    ref = request.match_info["ref"]
    try:
        action = request.app[RUNTIME].packs.action(ref)
    except ActionError as exc:
        raise NotFound(f"Resource with id or reference {ref!r} doesn't exist: {exc}") from None
    return json_response(action.to_api())


def runner_type_api(runner) -> dict[str, Any]:
    return {
        "id": runner.name,
        "name": runner.name,
        "uid": f"runner_type:{runner.name}",
        "description": (type(runner).__doc__ or "").strip().splitlines()[0]
        if type(runner).__doc__
        else "",
        "enabled": True,
        "runner_parameters": dict(runner.parameters),
        "runner_module": runner.name,
    }


async def list_runner_types(request: web.Request) -> web.Response:
    registry = request.app[RUNTIME].runners
    names = registry.names()
    wanted = request.query.get("name")
    if wanted:
        names = [n for n in names if n == wanted]
    return json_response([runner_type_api(registry.get(n)) for n in names])


async def get_runner_type(request: web.Request) -> web.Response:
    registry = request.app[RUNTIME].runners
    name = request.match_info["name"]
    if name not in registry.names():
        raise NotFound(f"no runner type {name!r}; known: {', '.join(registry.names())}")
    return json_response(runner_type_api(registry.get(name)))


async def list_packs(request: web.Request) -> web.Response:
    packs = request.app[RUNTIME].packs.packs
    return json_response([pack.to_api() for _, pack in sorted(packs.items())])


async def get_pack(request: web.Request) -> web.Response:
    pack = request.app[RUNTIME].packs.packs.get(request.match_info["ref"])
    if pack is None:
        raise NotFound(f"no pack {request.match_info['ref']!r}")
    return json_response(pack.to_api())


async def list_executions(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    limit, offset = paging(request.query)
    page = await runtime.store.list_executions(
        filters(request.query, EXECUTION_FILTERS), limit, offset
    )
    return json_response(
        [execution_api(runtime, item, await _children_ids(runtime, item)) for item in page.items],
        headers={"X-Total-Count": str(page.total)},
    )


async def get_execution(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    record = await runtime.store.get_execution(request.match_info["id"])
    return json_response(execution_api(runtime, record, await _children_ids(runtime, record)))


async def list_children(request: web.Request) -> web.Response:
    """`GET /api/v1/executions/{id}/children?depth=N` (-1: every level): the task runs of
    a workflow and, deeper, of its subworkflows, parents before their children."""
    runtime = request.app[RUNTIME]
    root = await runtime.store.get_execution(request.match_info["id"])
    try:
        depth = int(request.query.get("depth", "1"))
    except ValueError:
        raise IngestError('"depth" must be an integer (-1: every level)') from None
    found: list[Any] = []
    level, parents = 1, [root]
    while parents and (depth < 0 or level <= depth) and len(found) < MAX_CHILDREN:
        below = []
        for parent in parents:
            page = await runtime.store.list_executions({"parent": parent.id}, MAX_CHILDREN, 0)
            below.extend(sorted(page.items, key=lambda item: (item.created_at, item.id)))
        found.extend(below)
        parents, level = below, level + 1
    found = found[:MAX_CHILDREN]
    return json_response(
        [execution_api(runtime, item, await _children_ids(runtime, item)) for item in found]
    )


async def _children_ids(runtime: Runtime, record) -> list[str]:
    """A workflow's task runs, oldest first; [] for an execution of any other runner."""
    if not runtime.action_known(record.action):
        return []
    if runtime.packs.action(record.action).runner_type != ORQUESTA:
        return []
    page = await runtime.store.list_executions({"parent": record.id}, MAX_CHILDREN, 0)
    return [item.id for item in sorted(page.items, key=lambda item: (item.created_at, item.id))]


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


async def re_emit(request: web.Request) -> web.Response:
    """Store a copy of a trigger instance as a new pending one (st2 trigger-instance re-emit)."""
    runtime = request.app[RUNTIME]
    original = await runtime.store.get_trigger_instance(request.match_info["id"])
    accepted = await runtime.store.add_trigger_instance(
        NewTriggerInstance(
            trigger=original.trigger, payload=original.payload, webhook=original.webhook
        )
    )
    return json_response(
        {
            "message": f"Trigger instance {original.id} successfully re-sent as {accepted.id}.",
            "id": accepted.id,
            "trigger_instance": accepted.id,
            "original": original.id,
        },
        200,
    )


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await read_json(request)
    except ValueError:
        raise IngestError("the request body must be JSON") from None
    if not isinstance(body, dict):
        raise IngestError("the request body must be a JSON object")
    return body
