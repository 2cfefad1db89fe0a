"""The generic triggers a finished execution fires, as StackStorm's notifier builds them:
``core.st2.generic.actiontrigger`` for every finished execution and
``core.st2.generic.notifytrigger`` for each route of the action's ``notify``.

Facts from StackStorm (st2common/constants/triggers.py, the notifier): the action trigger's
payload is execution_id, status, start_timestamp, action_name, action_ref, runner_ref,
parameters and result; ``notify`` has on-complete (any end), on-success (succeeded) and
on-failure (failed, timeout, abandoned), each with message, data and routes, and one
notify trigger per route.

A rule on the action trigger whose action finishes fires the rule again: the payload
carries how deep the chain is (``trigger_depth``, one more than the finished execution's
context says), and the rules stop a chain past ``rules.max_trigger_depth``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from engine.model.records import Execution, NewTriggerInstance

ACTION_TRIGGER = "core.st2.generic.actiontrigger"
NOTIFY_TRIGGER = "core.st2.generic.notifytrigger"
# A new inquiry is pending (StackStorm's inquirer runner dispatches it: {"id", "route"}).
INQUIRY_TRIGGER = "core.st2.generic.inquiry"
GENERIC_TRIGGERS = frozenset({ACTION_TRIGGER, NOTIFY_TRIGGER})
# In a generic trigger's payload and in the context of the executions its rules request.
DEPTH_KEY = "trigger_depth"

_SUCCESS = frozenset({"succeeded"})
_FAILURE = frozenset({"failed", "timeout", "abandoned"})


def notify_for(execution: Execution, action_notify: Mapping[str, Any]) -> Mapping[str, Any]:
    """The `notify` an execution's end follows. As StackStorm (st2common's
    action.create_request, the action-chain runner): a chain link's child carries the
    one its chain chose in `context["notify"]` (the link's, the chain's, or none for a
    link in `skip_notify`); an Orquesta task run notifies nothing (StackStorm notifies
    only the tasks a workflow's notify names, which Hookyard does not support); any
    other execution follows its action's."""
    context = execution.context or {}
    chosen = context.get("notify")
    if isinstance(chosen, Mapping):
        return chosen
    if "orquesta" in context:
        return {}
    return action_notify


def depth_of(data: Any) -> int:
    """The chain depth a context or payload records (0 when none or not a number)."""
    depth = data.get(DEPTH_KEY) if isinstance(data, Mapping) else None
    if isinstance(depth, int) and not isinstance(depth, bool) and depth >= 0:
        return depth
    return 0


def _timestamp(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def generic_instances(
    execution: Execution,
    *,
    runner_ref: str | None,
    notify: Mapping[str, Any],
    wanted: Collection[str],
) -> list[NewTriggerInstance]:
    """The generic trigger instances of a finished execution, for the types in `wanted`
    (those some rule listens to; the others are not written at all)."""
    depth = depth_of(execution.context) + 1
    action_name = execution.action.partition(".")[2]
    found: list[NewTriggerInstance] = []
    if ACTION_TRIGGER in wanted:
        payload = {
            "execution_id": execution.id,
            "status": execution.status,
            "start_timestamp": _timestamp(execution.started_at or execution.created_at),
            "action_name": action_name,
            "action_ref": execution.action,
            "runner_ref": runner_ref,
            "parameters": execution.parameters,
            "result": execution.result,
            DEPTH_KEY: depth,
        }
        found.append(NewTriggerInstance(trigger=ACTION_TRIGGER, payload=payload))
    if NOTIFY_TRIGGER in wanted and notify:
        for section in _sections(notify, execution.status):
            for route in section.get("routes") or section.get("channels") or []:
                payload = {
                    "execution_id": execution.id,
                    "status": execution.status,
                    "start_timestamp": _timestamp(execution.started_at or execution.created_at),
                    "end_timestamp": _timestamp(execution.finished_at),
                    "action_ref": execution.action,
                    "runner_ref": runner_ref,
                    "channel": route,
                    "route": route,
                    "message": section.get("message"),
                    "data": section.get("data") or {},
                    DEPTH_KEY: depth,
                }
                found.append(NewTriggerInstance(trigger=NOTIFY_TRIGGER, payload=payload))
    return found


def _sections(notify: Mapping[str, Any], status: str) -> list[Mapping[str, Any]]:
    names = ["on-complete"]
    if status in _SUCCESS:
        names.append("on-success")
    elif status in _FAILURE:
        names.append("on-failure")
    sections = []
    for name in names:
        section = notify.get(name) or notify.get(name.replace("-", "_"))
        if isinstance(section, Mapping):
            sections.append(section)
    return sections


def inquiry_instance(execution_id: str, route: str) -> NewTriggerInstance:
    """StackStorm's payload for a new inquiry: its id and route, nothing else (its
    trigger type allows no other property)."""
    return NewTriggerInstance(trigger=INQUIRY_TRIGGER, payload={"id": execution_id, "route": route})
