"""When a step settles a workflow's (or chain's) pause or resume, as StackStorm does:
a `pausing` workflow is `paused` once nothing of it runs any more — its conductor has
no task running, or every child still active is a paused subworkflow (so a parent shows
`pausing` until every level below it is paused); a `resuming` one is `running` once
no subworkflow of it is paused, pausing or resuming any more.
"""

from __future__ import annotations

from engine.model.records import WorkflowStep

PAUSING, PAUSED, RESUMING, RUNNING = "pausing", "paused", "resuming", "running"


def settled_status(step: WorkflowStep, conductor_status: str, requested: int) -> str | None:
    """ "paused", "running", or None (nothing settles in this step); `requested` is how
    many children the step requests."""
    status = step.workflow.status
    if status == RESUMING:
        return RUNNING if not step.paused and not step.settling else None
    if status != PAUSING or requested:
        return None
    if conductor_status == PAUSED or (step.active and step.active == step.paused):
        return PAUSED
    return None
