"""Actions, runner types and packs under /api/v1, in StackStorm's shapes (reads only).

Running an action is `POST /api/v1/executions` (engine.http.executions_api).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.errors import ActionError, NotFound
from engine.http.context import RUNTIME, json_response
from engine.http.paging import add_get_both_slashes


def add_routes(app: web.Application) -> None:
    for path, handler in (
        ("/api/v1/actions", list_actions),
        ("/api/v1/actions/{ref}", get_action),
        ("/api/v1/runnertypes", list_runner_types),
        ("/api/v1/runnertypes/{name}", get_runner_type),
        ("/api/v1/packs", list_packs),
        ("/api/v1/packs/{ref}", get_pack),
    ):
        add_get_both_slashes(app, path, handler)


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
