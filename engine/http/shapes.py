"""Records as StackStorm's API shapes them (the `st2` CLI reads these fields)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from engine.model.records import Enforcement, Execution, TriggerInstance, isoformat
from engine.rules import Rule
from engine.rules.rule import rule_id

#: StackStorm's status of a task run waiting out its `delay` (shown, never stored).
DELAYED = "delayed"


def trigger_instance(instance: TriggerInstance) -> dict[str, Any]:
    return {
        "id": instance.id,
        "trigger": instance.trigger,
        "occurrence_time": isoformat(instance.occurrence_time),
        "payload": instance.payload,
        "status": instance.status,
        "webhook": instance.webhook,
        "dedupe_key": instance.dedupe_key,
    }


def enforcement(record: Enforcement) -> dict[str, Any]:
    return {
        "id": record.id,
        "rule": {"ref": record.rule_ref, "id": record.rule_id or rule_id(record.rule_ref)},
        "trigger_instance_id": record.trigger_instance_id,
        "execution_id": record.execution_id,
        "enforced_at": isoformat(record.enforced_at),
        "status": record.status,
        "failure_reason": record.failure_reason,
        "trace": record.trace,
    }


def execution(
    record: Execution,
    action: dict[str, Any] | None = None,
    children: list[str] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """`action` is the action's API dict when known; st2 needs at least ref and runner_type.
    `children`: the ids of a workflow's task runs (st2 marks listed workflows by them)."""
    action_api = action or {"ref": record.action, "runner_type": None}
    return {
        "id": record.id,
        "action": action_api,
        "parameters": record.parameters,
        "status": shown_status(record, now or datetime.now(UTC)),
        "result": record.result,
        "context": record.context,
        "start_timestamp": isoformat(record.created_at),
        "end_timestamp": isoformat(record.finished_at),
        "started_at": isoformat(record.started_at),
        "attempt": record.attempt,
        "log": list(record.log),
        "trigger_instance": (record.context.get("trigger_instance") or {}).get("id"),
        "rule": record.context.get("rule"),
        "parent": record.parent,
        "children": list(children or []),
    }


def shown_status(record: Execution, now: datetime) -> str:
    """As StackStorm shows it: a requested task run waiting out its `delay` is "delayed"."""
    waiting = record.run_after is not None and record.run_after > now
    return DELAYED if record.status == "requested" and waiting else record.status


def webhook(name: str, rules: list[Rule]) -> dict[str, Any]:
    return {
        "name": name,
        "type": "core.st2.webhook",
        "parameters": {"url": name},
        "url": f"/webhooks/{name}",
        "description": "; ".join(r.description for r in rules if r.description) or None,
        "rules": [r.ref for r in rules],
    }
