"""engine.process.ended_triggers and engine.model.generic_triggers.notify_for: what an
end fires — nothing without a listening rule, the action's notify for a plain execution
or a workflow, none for an Orquesta task run, and a chain link's chosen one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.errors import ActionError
from engine.model.generic_triggers import ACTION_TRIGGER, NOTIFY_TRIGGER, notify_for
from engine.model.records import Execution
from engine.process.ended_triggers import ended_instances

NOTIFY = {"on-complete": {"message": "done", "routes": ["ops"]}}


@dataclass
class Rules:
    listening: set[str]

    def candidates(self, trigger: str) -> list[str]:
        return ["rule"] if trigger in self.listening else []


@dataclass
class Action:
    runner_type: str = "orquesta"
    notify: dict[str, Any] = field(default_factory=lambda: dict(NOTIFY))


class Packs:
    def action(self, ref: str) -> Action:
        if ref != "p.flow":
            raise ActionError(f"unknown action {ref!r}")
        return Action()


def ended(action: str = "p.flow", **context: Any) -> Execution:
    return Execution(
        id="e1", action=action, parameters={}, status="succeeded", context=context, result={}
    )


def test_no_listening_rule_builds_nothing() -> None:
    assert ended_instances(Rules(set()), Packs(), ended()) == []


def test_a_workflow_end_fires_both_triggers_with_its_actions_notify() -> None:
    both = Rules({ACTION_TRIGGER, NOTIFY_TRIGGER})
    fired = ended_instances(both, Packs(), ended())
    assert [i.trigger for i in fired] == [ACTION_TRIGGER, NOTIFY_TRIGGER]
    assert fired[0].payload["runner_ref"] == "orquesta"
    assert (fired[1].payload["route"], fired[1].payload["message"]) == ("ops", "done")
    # An unknown action still fires the action trigger (no runner, no notify).
    [only] = ended_instances(both, Packs(), ended("gone.action"))
    assert (only.trigger, only.payload["runner_ref"]) == (ACTION_TRIGGER, None)


def test_notify_for_orquesta_tasks_and_chain_links() -> None:
    assert notify_for(ended(), NOTIFY) == NOTIFY
    assert notify_for(ended(orquesta={"task_name": "t"}), NOTIFY) == {}
    link = {"on-success": {"routes": ["l"]}}
    assert notify_for(ended(chain={"name": "a"}, notify=link), NOTIFY) == link
    assert notify_for(ended(chain={"name": "a"}, notify={}), NOTIFY) == {}  # skip_notify
    assert notify_for(ended(notify="not a mapping"), NOTIFY) == NOTIFY
    only_notify = Rules({NOTIFY_TRIGGER})
    assert ended_instances(only_notify, Packs(), ended(orquesta={"task_name": "t"})) == []
