"""When a step settles a workflow's (or chain's) pause or resume, as StackStorm does
(orquesta's workflow state machine; the action-chain runner pauses with a paused link):
- a workflow whose every active child waits — an inquiry pending a response, a paused
  subworkflow — is `paused`: nothing of it can go on (so a parent shows `pausing` until
  every level below it is paused);
- a running (or resuming) one whose conductor an inquiry paused while other tasks run is
  `pausing`: they finish, no new task starts;
- a `pausing` workflow is `paused` once its conductor has no task running;
- a `resuming` one — or one whose inquiry was answered — is `running` once no
  subworkflow of it is pausing or resuming;
- a `paused` one whose conductor runs again (its inquiry answered while the pause was
  being decided) is `running`.
"""

from __future__ import annotations

PAUSING, PAUSED, RESUMING, RUNNING = "pausing", "paused", "resuming", "running"


def settled_status(
    status: str,
    conductor_status: str,
    requested: int,
    *,
    active: int = 0,
    waiting: int = 0,
    settling: int = 0,
    answered: bool = False,
) -> str | None:
    """ "paused", "pausing", "running", or None (nothing settles in this step).

    `status` is the workflow execution's; `requested` how many children the step
    requests; `active` its children not ended, of which `waiting` wait (paused
    subworkflows and pending inquiries) and `settling` are subworkflows pausing or
    resuming; `answered` whether the step resumed a conductor paused for an inquiry
    answered since."""
    if not requested and active > 0 and active == waiting:
        return PAUSED if status in (RUNNING, RESUMING, PAUSING) else None
    if conductor_status == PAUSING and status in (RUNNING, RESUMING):
        return PAUSING
    if status == RESUMING or answered:
        return None if settling else RUNNING
    if status == PAUSING and conductor_status == PAUSED and not requested:
        return PAUSED
    if status == PAUSED and conductor_status == RUNNING:
        return RUNNING
    return None
