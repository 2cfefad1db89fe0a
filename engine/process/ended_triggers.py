"""The generic trigger instances of ends no action worker records: a workflow or chain
ending (its last step), an execution canceled before it ran, one abandoned or settled
after its worker died. The store calls `ended_instances` (through
`store.use_generic_triggers`, set by engine.process.runtime) inside the transaction
that ends the execution, so the instances exist if and only if the end does.

The action worker's own finishes decide the same with engine.workers.generic_triggers
(precomputed before its transaction). Both cost two dict lookups when no rule listens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.errors import ActionError
from engine.model.generic_triggers import (
    ACTION_TRIGGER,
    NOTIFY_TRIGGER,
    generic_instances,
    notify_for,
)
from engine.model.records import Execution, NewTriggerInstance


def ended_instances(ruleset: Any, packs: Any, execution: Execution) -> list[NewTriggerInstance]:
    """What `execution`'s end fires, for the generic trigger types some rule listens to."""
    on_action, on_notify = ruleset.candidates(ACTION_TRIGGER), ruleset.candidates(NOTIFY_TRIGGER)
    if not on_action and not on_notify:
        return []
    try:
        action = packs.action(execution.action)
    except ActionError:
        action = None
    notify = notify_for(execution, dict(action.notify) if action is not None else {})
    wanted = {ACTION_TRIGGER} if on_action else set()
    if notify and on_notify:
        wanted.add(NOTIFY_TRIGGER)
    if not wanted:
        return []
    runner_ref = action.runner_type if action is not None else None
    return generic_instances(execution, runner_ref=runner_ref, notify=notify, wanted=wanted)


def ended_source(current: Callable[[], tuple[Any, Any]]) -> Callable[[Execution], list]:
    """`ended_instances` over the process's current rule set and packs (`current()` reads
    them at each end: a reload replaces them whole)."""

    def source(execution: Execution) -> list[NewTriggerInstance]:
        ruleset, packs = current()
        return ended_instances(ruleset, packs, execution)

    return source
