"""Feed entries as StackStorm's stream events: names and bodies (st2's API shapes, as
engine.http.executions_api and engine.http.shapes build them), for engine.http.stream_hub.
"""

from __future__ import annotations

import re
from typing import Any

from engine.http import shapes
from engine.http.executions_api import execution_api
from engine.model.records import TERMINAL_EXECUTION_STATUSES
from engine.model.stream import (
    ANNOUNCEMENT_PREFIX,
    EXECUTION_CREATE,
    EXECUTION_OUTPUT_CREATE,
    LIVEACTION_CREATE,
    LIVEACTION_UPDATE,
    TRIGGER_INSTANCE_CREATE,
    FeedEntry,
)
from engine.process.runtime import Runtime
from engine.runners.dispatch import ANNOUNCEMENT_TRIGGER

_ROUTE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def shape(runtime: Runtime, entry: FeedEntry) -> list[tuple[str, dict[str, Any]]]:
    """The events one feed entry makes (none when what it references is gone)."""
    if entry.name == EXECUTION_OUTPUT_CREATE:
        return [(entry.name, entry.data or {})]
    if entry.name == TRIGGER_INSTANCE_CREATE:
        if entry.instance is None:
            return []
        body = shapes.trigger_instance(entry.instance)
        body["status"] = "pending"  # as it was when created, whatever it is now
        return [(entry.name, body), *_announcement(entry.instance.trigger, body["payload"])]
    if entry.name.startswith(ANNOUNCEMENT_PREFIX):
        return [(entry.name, entry.data or {})]
    if entry.execution is None:
        return []
    execution = execution_api(runtime, entry.execution)
    # The execution as the entry saw it: its status then, no result before it ended.
    execution["status"] = entry.status
    if entry.status not in TERMINAL_EXECUTION_STATUSES:
        execution["result"] = None
        execution["end_timestamp"] = None
    liveaction = {
        "id": execution["id"],
        "action": execution["action"]["ref"],
        "status": execution["status"],
        "parameters": execution["parameters"],
        "result": execution["result"],
        "context": execution["context"],
        "start_timestamp": execution["start_timestamp"],
        "end_timestamp": execution["end_timestamp"],
        "runner_info": {},
        "notify": {},
    }
    created = entry.name == EXECUTION_CREATE
    return [
        (entry.name, execution),
        (LIVEACTION_CREATE if created else LIVEACTION_UPDATE, liveaction),
    ]


def _announcement(trigger: str, payload: Any) -> list[tuple[str, dict[str, Any]]]:
    """core.announcement's instance as st2 streams it: `st2.announcement__<route>` with
    {"payload": the action's parameters, "trace_context"}. A route that is not a plain
    name (it would break the event's line) is left to the trigger instance event."""
    if trigger != ANNOUNCEMENT_TRIGGER or not isinstance(payload, dict):
        return []
    route = payload.get("route")
    if not isinstance(route, str) or not _ROUTE.match(route):
        return []
    body = {"payload": {"message": payload.get("message")}, "trace_context": None}
    return [(ANNOUNCEMENT_PREFIX + route, body)]
