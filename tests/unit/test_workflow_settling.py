"""engine.workers.workflow_settling: when a step settles a workflow's pause or resume,
from the counts of its children (StackStorm's workflow state machine)."""

from __future__ import annotations

import pytest

from engine.workers.workflow_settling import settled_status


def step(status: str, active: int = 0, paused: int = 0, settling: int = 0) -> dict:
    return {"status": status, "active": active, "waiting": paused, "settling": settling}


@pytest.mark.parametrize(
    ("given", "conductor", "requested", "settled"),
    [
        # Pausing: paused once nothing runs, or all that runs is paused subworkflows.
        (step("pausing"), "paused", 0, "paused"),
        (step("pausing", active=1), "pausing", 0, None),
        (step("pausing", active=2, paused=1), "pausing", 0, None),
        (step("pausing", active=2, paused=2), "pausing", 0, "paused"),
        (step("pausing", active=1, settling=1), "pausing", 0, None),  # still pausing below
        # Running with only paused subworkflows left: nothing can go on.
        (step("running", active=1, paused=1), "running", 0, "paused"),
        (step("running", active=2, paused=1), "running", 0, None),
        (step("running", active=1, paused=1), "running", 1, None),  # a new task starts
        (step("running"), "running", 0, None),
        # Resuming: running once no subworkflow is pausing or resuming.
        (step("resuming", active=1, settling=1), "running", 0, None),
        (step("resuming", active=1), "running", 0, "running"),
        (step("resuming"), "running", 3, "running"),
        (step("canceling", active=1, paused=1), "canceling", 0, None),
        (step("paused", active=1, paused=1), "pausing", 0, None),
    ],
)
def test_settled_status(given: dict, conductor: str, requested: int, settled) -> None:
    status = given.pop("status")
    assert settled_status(status, conductor, requested, **given) == settled
