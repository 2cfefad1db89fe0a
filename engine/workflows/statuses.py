"""The statuses of an Orquesta workflow and its tasks, as the conductor names them."""

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
PAUSING, PAUSED, CANCELING, CANCELED = "pausing", "paused", "canceling", "canceled"
#: Workflow statuses after which nothing runs again.
COMPLETED = frozenset({SUCCEEDED, FAILED, CANCELED})
FAILED_MESSAGE = "Execution failed. See result for details."
# `do: retry` runs the task again up to this many times, without delay (Orquesta's docs).
RETRY_COMMAND_TIMES = 3
RESUMING = "resuming"


def waiting_settled(
    workflow_status: str,
    conductor_status: str,
    final: str | None,
    requested: int,
    active: int,
    waiting: int,
) -> str | None:
    """A step's final status once tasks waiting for a person count (StackStorm: a task
    whose inquiry is pending, or whose subworkflow is paused, pauses its workflow once no
    other task is active; an answer resumes it).

    `final` is what the step decided without them; `active` and `waiting` count the
    children not ended and, of those, the waiting ones; `requested` the children the step
    starts. Returns the status to settle (or None: unchanged).
    """
    if final is not None and final not in (RUNNING, PAUSED):
        return final  # ended
    if not requested and active and active == waiting:
        if workflow_status in (RUNNING, RESUMING, PAUSING):
            return PAUSED
        return None if workflow_status == PAUSED else final
    if conductor_status == PAUSING and workflow_status in (RUNNING, RESUMING):
        return PAUSING  # an inquiry paused it; its running tasks finish first
    if workflow_status == PAUSED and conductor_status == RUNNING:
        # Paused only for a waiting task, and one is done (answered while the pause was
        # being decided): it runs on.
        return RUNNING
    return final
