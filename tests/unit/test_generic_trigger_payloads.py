"""The generic trigger payloads a finished execution makes (pure): which notify sections
apply to which end, and how deep a chain is when the depth is missing or hostile."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.model.generic_triggers import (
    ACTION_TRIGGER,
    NOTIFY_TRIGGER,
    depth_of,
    generic_instances,
)
from engine.model.records import Execution

NOTIFY = {
    "on-complete": {"message": "done", "routes": ["audit"]},
    "on-success": {"message": "ok", "routes": ["slack", "mail"]},
    "on-failure": {"message": "broken", "data": {"x": 1}, "routes": ["pager"]},
}


def finished(status: str, context: dict | None = None) -> Execution:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return Execution(
        id="e1",
        action="ci.deploy",
        parameters={"a": 1},
        status=status,
        context=context or {},
        result={"r": 2},
        started_at=at,
        finished_at=at,
    )


@pytest.mark.parametrize(
    ("status", "routes"),
    [
        ("succeeded", ["audit", "slack", "mail"]),
        ("failed", ["audit", "pager"]),
        ("timeout", ["audit", "pager"]),
        ("abandoned", ["audit", "pager"]),
        ("canceled", ["audit"]),
    ],
)
def test_notify_sections_by_status(status: str, routes: list[str]) -> None:
    made = generic_instances(
        finished(status), runner_ref="noop", notify=NOTIFY, wanted={NOTIFY_TRIGGER}
    )
    assert [i.payload["route"] for i in made] == routes
    assert all(i.trigger == NOTIFY_TRIGGER for i in made)


def test_action_trigger_payload_is_stackstorms_shape_plus_the_depth() -> None:
    [made] = generic_instances(
        finished("succeeded", {"trigger_depth": 2}),
        runner_ref="local-shell-cmd",
        notify=NOTIFY,
        wanted={ACTION_TRIGGER},
    )
    assert made.payload == {
        "execution_id": "e1",
        "status": "succeeded",
        "start_timestamp": "2026-01-02T03:04:05+00:00",
        "action_name": "deploy",
        "action_ref": "ci.deploy",
        "runner_ref": "local-shell-cmd",
        "parameters": {"a": 1},
        "result": {"r": 2},
        "trigger_depth": 3,
    }


def test_nothing_is_built_for_types_no_rule_wants() -> None:
    assert generic_instances(finished("succeeded"), runner_ref=None, notify=NOTIFY, wanted=()) == []


@pytest.mark.parametrize(
    ("data", "depth"),
    [
        ({}, 0),
        ({"trigger_depth": 4}, 4),
        ({"trigger_depth": -3}, 0),
        ({"trigger_depth": "9"}, 0),
        ({"trigger_depth": True}, 0),
        (None, 0),
        ([1], 0),
    ],
)
def test_depth_of_reads_only_a_sane_count(data, depth) -> None:
    assert depth_of(data) == depth
