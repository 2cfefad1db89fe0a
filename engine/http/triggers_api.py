"""Trigger types, triggers, timers and sensor types under /api/v1 in StackStorm's shapes
(reads only): `st2 trigger list|get`, `st2 timer list`, `st2 sensor list`.

A trigger, in StackStorm, is a trigger type with parameters: a parameterless type has one
trigger of its own name; a rule whose trigger has parameters (a webhook url, a timer's
schedule) makes one named after a hash of them. Both are derived from the loaded packs and
rules, never stored.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.errors import NotFound
from engine.http.context import RUNTIME, json_response
from engine.http.paging import add_get_both_slashes
from engine.packs.triggers import derived_triggers
from engine.rules.timers import TIMER_TRIGGER_TYPES


def add_routes(app: web.Application) -> None:
    for path, handler in (
        ("/api/v1/triggertypes", list_trigger_types),
        ("/api/v1/triggertypes/{ref}", get_trigger_type),
        ("/api/v1/triggers", list_triggers),
        ("/api/v1/triggers/{ref}", get_trigger),
        ("/api/v1/timers", list_timers),
        ("/api/v1/timers/{ref}", get_timer),
        ("/api/v1/sensortypes", list_sensor_types),
        ("/api/v1/sensortypes/{ref}", get_sensor_type),
    ):
        add_get_both_slashes(app, path, handler)


def _trigger_types(request: web.Request) -> list[dict[str, Any]]:
    packs = request.app[RUNTIME].packs
    return [t.to_api(packs.packs[t.pack].path) for t in packs.trigger_types()]


async def list_trigger_types(request: web.Request) -> web.Response:
    pack = request.query.get("pack")
    return json_response([t for t in _trigger_types(request) if not pack or t["pack"] == pack])


async def get_trigger_type(request: web.Request) -> web.Response:
    wanted = request.match_info["ref"]
    for item in _trigger_types(request):
        if wanted in (item["ref"], item["id"]):
            return json_response(item)
    raise NotFound(f"Resource with id or reference {wanted!r} doesn't exist")


def _triggers(request: web.Request) -> list[dict[str, Any]]:
    runtime = request.app[RUNTIME]
    return derived_triggers(runtime.packs.trigger_types(), runtime.ruleset)


async def list_triggers(request: web.Request) -> web.Response:
    wanted_type = request.query.get("type")
    items = [t for t in _triggers(request) if not wanted_type or t["type"] == wanted_type]
    return json_response(items)


async def get_trigger(request: web.Request) -> web.Response:
    return _one(request, _triggers(request))


def _timers(request: web.Request) -> list[dict[str, Any]]:
    return [t for t in _triggers(request) if t["type"] in TIMER_TRIGGER_TYPES]


async def list_timers(request: web.Request) -> web.Response:
    # `st2 timer list -ty core.st2.IntervalTimer` sends ?timer_type=
    wanted = request.query.get("timer_type")
    return json_response([t for t in _timers(request) if not wanted or t["type"] == wanted])


async def get_timer(request: web.Request) -> web.Response:
    return _one(request, _timers(request))


def _one(request: web.Request, items: list[dict[str, Any]]) -> web.Response:
    wanted = request.match_info["ref"]
    for item in items:
        if wanted in (item["ref"], item["id"], item["uid"]):
            return json_response(item)
    raise NotFound(f"Resource with id or reference {wanted!r} doesn't exist")


def _sensor_types(request: web.Request) -> list[dict[str, Any]]:
    runtime = request.app[RUNTIME]
    items = []
    for spec in runtime.packs.sensors():
        item = spec.to_api()
        # The states of the sensors this process runs (the sensors role); elsewhere they
        # run in another process, or nowhere when no process has the role.
        state = runtime.sensors.state(spec.ref) if runtime.sensors is not None else None
        item.update(state or {"status": "enabled" if spec.enabled else "disabled"})
        items.append(item)
    return items


async def list_sensor_types(request: web.Request) -> web.Response:
    pack = request.query.get("pack")
    return json_response([s for s in _sensor_types(request) if not pack or s["pack"] == pack])


async def get_sensor_type(request: web.Request) -> web.Response:
    return _one(request, _sensor_types(request))
