"""Records that travel between the layers: plain, immutable data, no I/O.

Identifiers are 24 hex characters laid out like StackStorm's (Mongo ObjectId) ids, so
the `st2` CLI and StackStorm tooling accept them: 4 bytes of seconds since the epoch, 5
random bytes drawn once per process, and a 3-byte counter — they sort by creation time,
and within one process and second in the order they were made.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from engine.model.hook_payload import NamedHookPost
from engine.model.hook_payload import payload as hook_payload

# Trigger instance states (StackStorm's names).
PENDING = "pending"
PROCESSING = "processing"
PROCESSED = "processed"
PROCESSING_FAILED = "processing_failed"
TRIGGER_INSTANCE_STATUSES = (PENDING, PROCESSING, PROCESSED, PROCESSING_FAILED)

# Execution states.
REQUESTED = "requested"
SCHEDULED = "scheduled"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
TIMEOUT = "timeout"
CANCELED = "canceled"
# Cancel requested while running: the worker stops the run and records `canceled`.
CANCELING = "canceling"
ABANDONED = "abandoned"
# Held back by an action.concurrency policy; requested again when a slot frees.
DELAYED = "delayed"
# An inquiry (core.ask) waiting for its response: no worker holds it.
INQUIRY_PENDING = "pending"
EXECUTION_STATUSES = (
    REQUESTED,
    DELAYED,
    SCHEDULED,
    RUNNING,
    CANCELING,
    INQUIRY_PENDING,
    SUCCEEDED,
    FAILED,
    TIMEOUT,
    CANCELED,
    ABANDONED,
)
TERMINAL_EXECUTION_STATUSES = frozenset({SUCCEEDED, FAILED, TIMEOUT, CANCELED, ABANDONED})

# Enforcement states.
ENFORCEMENT_SUCCEEDED = "succeeded"
ENFORCEMENT_FAILED = "failed"

WEBHOOK_TRIGGER = "core.st2.webhook"


# Ids must be unique, not secret (API keys and lease tokens come from os.urandom). Ids
# made one after the other are consecutive, not scattered: each table's primary key (and
# the indexes that end in the id) then grows at its right edge, and a group commit of
# webhooks dirties a few pages instead of one page per row — random ids within a second
# made every SQLite commit write about three times the pages. A forked child draws its
# own process part, so parent and child never make the same ids.
_id_process = ""
_id_counter = itertools.count()


def _new_id_process() -> None:
    global _id_process, _id_counter
    _id_process = os.urandom(5).hex()
    _id_counter = itertools.count(int.from_bytes(os.urandom(3)))


_new_id_process()
os.register_at_fork(after_in_child=_new_id_process)


def new_id(now: float | None = None) -> str:
    global _id_prefix
    seconds = int(time.time() if now is None else now) & 0xFFFFFFFF
    # The part before the counter changes once a second: formatted then, not per id. (A
    # tuple is replaced whole, so threads read a consistent one.)
    prefix_seconds, prefix_process, prefix = _id_prefix
    if prefix_seconds != seconds or prefix_process is not _id_process:
        prefix = f"{seconds:08x}{_id_process}"
        _id_prefix = (seconds, _id_process, prefix)
    # next() on itertools.count is atomic: threads never get the same number.
    return prefix + format(next(_id_counter) & 0xFFFFFF, "06x")


_id_prefix: tuple[int, str, str] = (-1, "", "")


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(moment: datetime | None) -> str | None:
    """RFC 3339 / ISO 8601 in UTC with microseconds, as StackStorm's API prints it."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class NewTriggerInstance:
    """A trigger instance to be stored: what ingest (or a timer, or re-emit) produced.

    Not frozen, though nothing changes it: a frozen dataclass's __init__ sets each field
    through object.__setattr__: with NamedHookPost, ~15,000 of the ~108,000 instructions
    the writer child spent rebuilding a webhook (BENCHMARKS.md, session 6).
    """

    trigger: str
    payload: Any
    webhook: str | None = None
    # A key that must be unique (X-GitHub-Delivery...): a repeat returns the original id.
    dedupe_key: str | None = None
    occurrence_time: datetime = field(default_factory=utcnow)
    id: str = field(default_factory=new_id)
    # A named-hook post, whose payload (None above) is built from it by the process that
    # stores it (engine.model.hook_payload): off the HTTP loop when an ingest writer process
    # stores webhooks (engine.ingest.writer_child).
    post: NamedHookPost | None = field(default=None, compare=False, repr=False)

    def payload_data(self) -> Any:
        """The payload as data, a named-hook post's built from what it carried."""
        return self.payload if self.post is None else hook_payload(self.post)


@dataclass(frozen=True)
class Accepted:
    """The answer of the store to one added trigger instance."""

    id: str
    duplicate: bool = False


@dataclass(frozen=True)
class TriggerInstance:
    id: str
    trigger: str
    payload: Any
    occurrence_time: datetime
    status: str
    webhook: str | None = None
    dedupe_key: str | None = None
    # Set on instances returned by a claim: the fencing token completion must present.
    lease_token: str | None = None
    # Times claimed, the current claim included (released claims do not count).
    claims: int = 0


@dataclass(frozen=True)
class NewExecution:
    action: str
    parameters: dict[str, Any]
    # trigger_instance, rule (ref and id), user: the "why" of this execution.
    context: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_id)
    # The workflow execution this one is a task run of (StackStorm's `parent`).
    parent: str | None = None
    # Seconds after its request before it may be claimed (an Orquesta task's `delay`).
    delay: float = 0


@dataclass(frozen=True)
class Execution:
    id: str
    action: str
    parameters: dict[str, Any]
    status: str
    context: dict[str, Any]
    result: Any = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempt: int = 1
    # Status changes with their time: [{"status": ..., "timestamp": ...}] (st2 `log`).
    log: tuple[dict[str, Any], ...] = ()
    lease_token: str | None = None
    lease_expires_at: datetime | None = None
    parent: str | None = None
    # Not claimed before this time (an Orquesta task's `delay`); None: at once.
    run_after: datetime | None = None


@dataclass(frozen=True)
class EnforcementOutcome:
    """What the rules worker decided for one candidate rule of one trigger instance."""

    rule_ref: str
    status: str  # ENFORCEMENT_SUCCEEDED | ENFORCEMENT_FAILED
    trace: list[dict[str, Any]] = field(default_factory=list)
    failure_reason: str | None = None
    # The requested execution for a matched rule whose parameters rendered.
    execution: NewExecution | None = None
    # once_per rules: the rendered key; the store enforces "first time only".
    once_per_key: str | None = None
    rule_id: str | None = None
    id: str = field(default_factory=new_id)


@dataclass(frozen=True)
class InstanceDecision:
    """Everything the rules worker decided for one claimed trigger instance: recorded
    together (Store.record_decisions), or not at all."""

    instance_id: str
    lease_token: str
    outcomes: list[EnforcementOutcome]
    final_status: str  # PROCESSED | PROCESSING_FAILED
    # The explain traces to keep with it (engine.rules.explain), or None.
    evaluations: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Enforcement:
    id: str
    trigger_instance_id: str
    rule_ref: str
    status: str
    enforced_at: datetime
    failure_reason: str | None = None
    execution_id: str | None = None
    trace: list[dict[str, Any]] = field(default_factory=list)
    rule_id: str | None = None


@dataclass(frozen=True)
class Page:
    """One page of a list query with the total count of matching rows."""

    items: list[Any]
    total: int


@dataclass(frozen=True)
class WorkflowStep:
    """A claimed workflow run (engine.store.ops.workflows): what its next step reads."""

    workflow: Execution
    # The conductor's state as the last step left it (JSON data).
    state: dict[str, Any]
    # Checked and bumped by the step that applies this one: two steps never both apply.
    version: int
    lease_token: str
    # Children that ended since the last step, in the order they ended.
    finished: tuple[Execution, ...] = ()
    # Children not ended yet (requested, scheduled, running, canceling, and the
    # subworkflows pausing, paused or resuming).
    active: int = 0
    # Of those, subworkflows (or chains) paused, and those pausing or resuming: a
    # pausing workflow is paused once every active child is (StackStorm's semantics), a
    # resuming one running once none is paused or resuming any more.
    paused: int = 0
    settling: int = 0
    # Of those, the inquiries (core.ask) pending a response (StackStorm: one pauses an
    # Orquesta workflow, which then starts no new task; its running ones finish).
    asking: int = 0

    @property
    def waiting(self) -> int:
        """Active children waiting for a person: a pending inquiry, a paused subworkflow.
        A workflow whose every active child waits pauses too."""
        return self.paused + self.asking
