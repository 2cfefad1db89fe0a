"""The statuses of an Orquesta workflow and its tasks, as the conductor names them."""

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
PAUSING, PAUSED, CANCELING, CANCELED = "pausing", "paused", "canceling", "canceled"
#: Workflow statuses after which nothing runs again.
COMPLETED = frozenset({SUCCEEDED, FAILED, CANCELED})
FAILED_MESSAGE = "Execution failed. See result for details."
# `do: retry` runs the task again up to this many times, without delay (Orquesta's docs).
RETRY_COMMAND_TIMES = 3
RESUMING = "resuming"
