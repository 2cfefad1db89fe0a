"""When a step settles a workflow's (or chain's) pause or resume, as StackStorm does
(orquesta's workflow state machine; the action-chain runner pauses with a paused link):
- a `pausing` workflow is `paused` once nothing of it runs any more: its conductor has
  no task running, or every child still active is a paused subworkflow — so a parent
  shows `pausing` until every level below it is paused;
- a `running` workflow whose every active child is a paused subworkflow (one paused on
  its own) is `paused` too: nothing of it can go on;
- a `resuming` one is `running` once no subworkflow of it is pausing or resuming.
"""

from __future__ import annotations

from engine.model.records import WorkflowStep

PAUSING, PAUSED, RESUMING, RUNNING = "pausing", "paused", "resuming", "running"


def settled_status(step: WorkflowStep, conductor_status: str, requested: int) -> str | None:
    """ "paused", "running", or None (nothing settles in this step); `requested` is how
    many children the step requests."""
    status = step.workflow.status
    if status == RESUMING:
        return RUNNING if not step.settling else None
    if requested or status not in (PAUSING, RUNNING):
        return None
    dormant = step.active > 0 and step.active == step.paused
    if dormant or (status == PAUSING and conductor_status == PAUSED):
        return PAUSED
    return None
