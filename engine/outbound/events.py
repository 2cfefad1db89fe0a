"""The engine's own events, sent to subscriptions: types, their data, the envelope (pure).

The store writes an event in the transaction that makes it true (an outbox), and one
delivery per matching enabled subscription, numbered by that subscription's `sequence`.
The body is put together at send time from the stored data text, so numbers are sent
exactly as they were stored (integers of any size stay exact).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.errors import ConfigError
from engine.model.records import (
    EnforcementOutcome,
    Execution,
    NewExecution,
    TriggerInstance,
    isoformat,
    utcnow,
)

TRIGGER_INSTANCE_CREATED = "trigger_instance.created"
TRIGGER_INSTANCE_PROCESSED = "trigger_instance.processed"
RULE_ENFORCED = "rule.enforced"
EXECUTION_CREATED = "execution.created"
EXECUTION_UPDATED = "execution.updated"
DELIVERY_EXHAUSTED = "delivery.exhausted"
EVENT_TYPES = (
    TRIGGER_INSTANCE_CREATED,
    TRIGGER_INSTANCE_PROCESSED,
    RULE_ENFORCED,
    EXECUTION_CREATED,
    EXECUTION_UPDATED,
    DELIVERY_EXHAUSTED,
)


@dataclass(frozen=True)
class NewEvent:
    type: str
    data: dict[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    ts: datetime = field(default_factory=utcnow)
    # A subscription this event is not sent to: the one whose delivery was exhausted
    # (it is failing; telling it so would only fail again).
    exclude_subscription: str | None = None


def check_event_types(types: Any, where: str = "events") -> tuple[str, ...]:
    """A subscription's event filter: a list of known types; empty means every event."""
    if types is None:
        return ()
    if not isinstance(types, list | tuple) or not all(isinstance(t, str) for t in types):
        raise ConfigError(f"{where} must be a list of event type names")
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise ConfigError(
            f"{where}: unknown event type {unknown[0]!r}; known: {', '.join(EVENT_TYPES)}"
        )
    return tuple(dict.fromkeys(types))


def wants(subscribed: Sequence[str], event_type: str) -> bool:
    return not subscribed or event_type in subscribed


def envelope(event_id: str, ts: str, event_type: str, sequence: int, data_json: str) -> bytes:
    """The body sent: ``{"id", "ts", "type", "sequence", "data"}`` with data verbatim."""
    head = json.dumps({"id": event_id, "ts": ts, "type": event_type, "sequence": sequence})
    return f'{head[:-1]}, "data": {data_json}}}'.encode()


# --- what each event carries -------------------------------------------------------------


def trigger_instance_created(
    instance_id: str, trigger: str, webhook: str | None, occurred: datetime, payload: Any
) -> NewEvent:
    return NewEvent(
        TRIGGER_INSTANCE_CREATED,
        {
            "id": instance_id,
            "trigger": trigger,
            "webhook": webhook,
            "occurrence_time": isoformat(occurred),
            "payload": payload,
        },
    )


def trigger_instance_processed(
    instance: TriggerInstance | str, status: str, enforcements: int
) -> NewEvent:
    instance_id = instance if isinstance(instance, str) else instance.id
    return NewEvent(
        TRIGGER_INSTANCE_PROCESSED,
        {"id": instance_id, "status": status, "enforcements": enforcements},
    )


def rule_enforced(instance_id: str, outcome: EnforcementOutcome) -> NewEvent:
    return NewEvent(
        RULE_ENFORCED,
        {
            "id": outcome.id,
            "rule_ref": outcome.rule_ref,
            "trigger_instance_id": instance_id,
            "status": outcome.status,
            "failure_reason": outcome.failure_reason,
            "execution_id": outcome.execution.id if outcome.execution else None,
        },
    )


def execution_created(
    new: NewExecution, instance_id: str | None = None, rule_ref: str | None = None
) -> NewEvent:
    context = new.context or {}
    return NewEvent(
        EXECUTION_CREATED,
        {
            "id": new.id,
            "action": new.action,
            "status": "requested",
            "trigger_instance_id": instance_id or (context.get("trigger_instance") or {}).get("id"),
            "rule_ref": rule_ref or (context.get("rule") or {}).get("ref"),
        },
    )


def execution_updated(execution: Execution) -> NewEvent:
    data: dict[str, Any] = {
        "id": execution.id,
        "action": execution.action,
        "status": execution.status,
        "attempt": execution.attempt,
        "started_at": isoformat(execution.started_at),
        "finished_at": isoformat(execution.finished_at),
    }
    if execution.finished_at is not None:
        data["result"] = execution.result
    return NewEvent(EXECUTION_UPDATED, data)


def delivery_exhausted(
    delivery_id: str,
    subscription_id: str,
    event_id: str,
    event_type: str,
    attempts: int,
    last_status: int | None,
    last_error: str | None,
) -> NewEvent:
    return NewEvent(
        DELIVERY_EXHAUSTED,
        {
            "delivery_id": delivery_id,
            "subscription_id": subscription_id,
            "event_id": event_id,
            "event_type": event_type,
            "attempts": attempts,
            "last_status_code": last_status,
            "last_error": last_error,
        },
        exclude_subscription=subscription_id,
    )


# --- what one store operation emits ---------------------------------------------------


def instances_created(batch: Sequence[Any], stored_ids: Collection[str]) -> list[NewEvent]:
    """trigger_instance.created for the (item, payload JSON) pairs of a batch stored anew."""
    return [
        trigger_instance_created(
            item.id, item.trigger, item.webhook, item.occurrence_time, item.payload_data()
        )
        for item, _payload in batch
        if item.id in stored_ids
    ]


def enforcements_recorded(
    instance_id: str,
    final_status: str,
    outcomes: Sequence[EnforcementOutcome],
    written: Collection[str],
) -> list[NewEvent]:
    """rule.enforced per enforcement written, then trigger_instance.processed."""
    enforced = [rule_enforced(instance_id, o) for o in outcomes if o.id in written]
    return [*enforced, trigger_instance_processed(instance_id, final_status, len(enforced))]
