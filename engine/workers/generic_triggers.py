"""Which generic triggers a finishing execution fires, decided by the worker that
finishes it (engine.model.generic_triggers builds them, the store writes them in the
finishing transaction).

How the store learns that a rule listens, cheaply: it does not ask the database. Every
process holds the whole rule set (files, packs, and API rules kept current by
engine.workers.rule_sync), so the finishing worker looks the two trigger types up in its
rule index (a dict lookup) and hands the store a builder only when an enabled rule
listens. With none, finishing costs what it did before. A rule created through the API
in another process is seen here after rule_sync's next poll.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.errors import ActionError
from engine.model.generic_triggers import (
    ACTION_TRIGGER,
    NOTIFY_TRIGGER,
    generic_instances,
    notify_for,
)
from engine.model.records import Execution, NewTriggerInstance
from engine.process.runtime import Runtime
from engine.store.ops.generic_triggers import GenericSource


def generic_source(runtime: Runtime, execution: Execution) -> GenericSource | None:
    """The builder of `execution`'s generic trigger instances, or None when no rule
    listens to them (or its action has no notify for the notify trigger)."""
    ruleset = runtime.ruleset
    on_action, on_notify = ruleset.candidates(ACTION_TRIGGER), ruleset.candidates(NOTIFY_TRIGGER)
    if not on_action and not on_notify:
        return None  # the common case: two dict lookups, nothing else
    wanted = set()
    try:
        action = runtime.packs.action(execution.action)
    except ActionError:
        action = None
    if on_action:
        wanted.add(ACTION_TRIGGER)
    notify = notify_for(execution, dict(action.notify) if action is not None else {})
    if notify and on_notify:
        wanted.add(NOTIFY_TRIGGER)
    if not wanted:
        return None
    runner_ref = action.runner_type if action is not None else None

    def build(finished: Execution) -> Sequence[NewTriggerInstance]:
        return generic_instances(finished, runner_ref=runner_ref, notify=notify, wanted=wanted)

    return build
