"""Trigger instances under /api/v1/triggerinstances: list, get, and re-emit.

`POST /api/v1/triggerinstances/{id}/re_emit` stores a copy as a new pending instance, so
the rules evaluate it again (`st2 trigger-instance re-emit`). Why an instance was decided
as it was is engine.http.operations_api's `GET .../{id}/explain`.
"""

from __future__ import annotations

from aiohttp import web

from engine.http import shapes
from engine.http.context import RUNTIME, json_response
from engine.http.guard import guarded
from engine.http.paging import add_get_both_slashes, filters, page_response, paging
from engine.model.records import NewTriggerInstance

TRIGGER_INSTANCE_FILTERS = ("trigger", "status", "webhook", "timestamp_gt", "timestamp_lt")


def add_routes(app: web.Application) -> None:
    add_get_both_slashes(app, "/api/v1/triggerinstances", list_trigger_instances)
    add_get_both_slashes(app, "/api/v1/triggerinstances/{id}", get_trigger_instance)
    app.router.add_post("/api/v1/triggerinstances/{id}/re_emit", guarded(re_emit))


async def list_trigger_instances(request: web.Request) -> web.Response:
    limit, offset = paging(request.query)
    page = await request.app[RUNTIME].store.list_trigger_instances(
        filters(request.query, TRIGGER_INSTANCE_FILTERS), limit, offset
    )
    return page_response(page, shapes.trigger_instance)


async def get_trigger_instance(request: web.Request) -> web.Response:
    instance = await request.app[RUNTIME].store.get_trigger_instance(request.match_info["id"])
    return json_response(shapes.trigger_instance(instance))


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
