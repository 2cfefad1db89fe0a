"""Runners that store a trigger instance instead of running a process: ``inject-trigger``
(core.inject_trigger) and ``announcement`` (core.announcement).

Both go through the request's ``dispatch_trigger``, the path /webhooks/st2 takes (the
trigger type's payload_schema is checked there), so an injected instance is as durable
and as explainable as a posted one.
"""

from __future__ import annotations

from typing import Any

from engine.errors import EngineError
from engine.runners.base import SUCCEEDED, RunRequest, RunResult, failed

ANNOUNCEMENT_TRIGGER = "core.st2.announcement"


async def _dispatch(request: RunRequest, trigger: Any, payload: Any, trace_tag: Any) -> RunResult:
    if request.dispatch_trigger is None:
        return failed("this worker cannot dispatch trigger instances")
    if not isinstance(trigger, str) or not trigger:
        return failed("'trigger' must be a trigger type ref such as mypack.my_trigger")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        return failed("'payload' must be an object")
    if trace_tag is not None and not isinstance(trace_tag, str):
        return failed("'trace_tag' must be a string")
    try:
        instance_id = await request.dispatch_trigger(trigger, payload, trace_tag)
    except EngineError as exc:
        return failed(f"trigger {trigger!r} was not dispatched: {exc}")
    return RunResult(SUCCEEDED, {"trigger_instance": instance_id, "trigger": trigger})


class InjectTriggerRunner:
    name = "inject-trigger"
    parameters: dict[str, dict] = {}

    async def run(self, request: RunRequest) -> RunResult:
        return await _dispatch(
            request,
            request.parameter("trigger"),
            request.parameter("payload"),
            request.parameter("trace_tag"),
        )


class AnnouncementRunner:
    """Publishes an announcement as a core.st2.announcement trigger instance."""

    name = "announcement"
    parameters: dict[str, dict] = {
        "route": {
            "type": "string",
            "default": "general",
            "description": "The route the announcement is published on.",
        },
        "experimental": {
            "type": "boolean",
            "default": False,
            "description": "Accepted for StackStorm compatibility.",
        },
    }

    async def run(self, request: RunRequest) -> RunResult:
        route = request.parameter("route", "general")
        payload = {"route": route, "message": request.parameter("message")}
        return await _dispatch(request, ANNOUNCEMENT_TRIGGER, payload, None)
