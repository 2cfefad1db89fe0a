"""The change feed behind the event stream: StackStorm's event names, one feed entry, one
piece of an action's live output (plain records, no I/O).

A feed entry is written in the transaction of the change it reports (an execution
created or updated, a trigger instance stored, output read from a running action) and
numbered by the database (`seq`, growing): a stream client resumes after the last `seq`
it saw. Executions and trigger instances are referenced, not copied: the entry keeps the
status the execution had, and the reader joins the row (see engine.store.ops.stream).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.model.records import Execution, TriggerInstance

EXECUTION_CREATE = "st2.execution__create"
EXECUTION_UPDATE = "st2.execution__update"
EXECUTION_OUTPUT_CREATE = "st2.execution.output__create"
LIVEACTION_CREATE = "st2.liveaction__create"
LIVEACTION_UPDATE = "st2.liveaction__update"
TRIGGER_INSTANCE_CREATE = "st2.trigger_instance__create"
ANNOUNCEMENT_PREFIX = "st2.announcement__"
# Every name a client may ask for (announcements take any route after the prefix).
EVENT_NAMES = (
    EXECUTION_CREATE,
    EXECUTION_UPDATE,
    EXECUTION_OUTPUT_CREATE,
    LIVEACTION_CREATE,
    LIVEACTION_UPDATE,
    TRIGGER_INSTANCE_CREATE,
)
# What a client that names no events gets: StackStorm's default list
# (st2stream/controllers/v1/stream.py), less the deletes Hookyard never makes.
DEFAULT_EVENTS = (
    "st2.announcement__*",
    EXECUTION_CREATE,
    EXECUTION_UPDATE,
    LIVEACTION_CREATE,
    LIVEACTION_UPDATE,
)
# st2's ActionExecutionOutput output_type values for a process's two pipes.
STDOUT = "stdout"
STDERR = "stderr"


@dataclass(frozen=True)
class OutputChunk:
    """Text an action wrote to one of its pipes, as read (usually whole lines)."""

    output_type: str  # STDOUT | STDERR
    data: str
    timestamp: datetime
    id: int | None = None  # the stored piece's number (growing), once stored


@dataclass(frozen=True)
class FeedEntry:
    seq: int
    name: str
    object_id: str  # execution id (executions, output) or trigger instance id
    created_at: datetime
    # The execution's status when the entry was written (executions only).
    status: str | None = None
    # What the entry carries itself: an output chunk's fields, an announcement's body.
    data: dict[str, Any] | None = None
    # The rows referenced, joined at read time (None when since deleted).
    execution: Execution | None = None
    instance: TriggerInstance | None = None
