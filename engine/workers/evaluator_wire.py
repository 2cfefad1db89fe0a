"""What crosses between the rule evaluator's parent and its children, and how.

Frames on a socket pair: a 4-byte big-endian length, then a marshal, or a pickle for what
marshal cannot hold (both ends are the same Python and the same engine).

- parent → child: ("open", protocol, settings, memory limit, secrets); ("rules",
  [(definition, source, line)], {action ref: ((parameter, kind), ...)}); ("kv", snapshot);
  ("eval", seq, [(id, trigger, webhook, payload), ...]).
- child → parent: ("ready",) or ("failed", reason); per "eval": (seq, [(status,
  [outcome as a tuple], traces or None, [matched rule ref])]).

Beside the socket, a shared memory page where the child writes which instance and rule it
is on (the progress page), read by the parent's watchdog (engine.workers.evaluator_process).
"""

from __future__ import annotations

import marshal
import pickle
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from engine.model.records import EnforcementOutcome, NewExecution, TriggerInstance

# The length before each frame; PROTOCOL changes when a message changes shape.
LENGTH = struct.Struct("!I")
PROTOCOL = 1
# The progress page: step (bumped at each instance's start and end), busy, phase, chunk
# seq, instance index, length of the rule ref that follows (utf-8, cut to REF_MAX).
PROGRESS = struct.Struct("<QBBxxIIH")
REF_AT = 24
REF_MAX = 512
PAGE = 4096
PHASES = {0: "", 1: "matching the criteria", 2: "rendering the action parameters"}


def frame(message: tuple[Any, ...]) -> bytes:
    """A message as a frame: marshal (the fastest for plain data, which nearly every
    message is), else pickle; one byte says which."""
    try:
        data = b"m" + marshal.dumps(message)
    except ValueError:  # a date in a rule's parameters, a set...
        data = b"p" + pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return LENGTH.pack(len(data)) + data


def unframe(data: bytes) -> tuple[Any, ...]:
    """The message of a frame's body (after its length)."""
    if data[:1] == b"m":
        return marshal.loads(memoryview(data)[1:])
    return pickle.loads(memoryview(data)[1:])


def read_frame(stream: BinaryIO) -> tuple[Any, ...] | None:
    """The next framed message from a child's end of the socket; None at its end."""
    header = stream.read(LENGTH.size)
    if len(header) < LENGTH.size:
        return None
    (length,) = LENGTH.unpack(header)
    data = stream.read(length)
    if len(data) < length:
        return None
    return unframe(data)


def instance_to_wire(instance: TriggerInstance) -> tuple[Any, ...]:
    # What decide reads of an instance.
    return (instance.id, instance.trigger, instance.webhook, instance.payload)


def outcome_to_wire(outcome: EnforcementOutcome) -> tuple[Any, ...]:
    execution = outcome.execution
    return (
        outcome.rule_ref,
        outcome.status,
        plain(outcome.trace),
        outcome.failure_reason,
        None
        if execution is None
        else (
            execution.action,
            plain(execution.parameters),
            plain(execution.context),
            execution.id,
        ),
        outcome.once_per_key,
        outcome.rule_id,
        outcome.id,
    )


def outcome_from_wire(wire: tuple[Any, ...]) -> EnforcementOutcome:
    rule_ref, status, trace, failure_reason, execution, once_per_key, rule_id, id_ = wire
    return EnforcementOutcome(
        rule_ref=rule_ref,
        status=status,
        trace=trace,
        failure_reason=failure_reason,
        execution=None if execution is None else NewExecution(*execution),
        once_per_key=once_per_key,
        rule_id=rule_id,
        id=id_,
    )


@dataclass(frozen=True)
class Verdict:
    """What was decided for one trigger instance (its lease token is the worker's)."""

    status: str  # PROCESSED | PROCESSING_FAILED
    outcomes: list[EnforcementOutcome]
    traces: list[dict[str, Any]] | None
    matched: list[str]  # refs of the rules that matched (metrics)


def verdict_from_wire(wire: tuple[Any, ...] | list[Any]) -> Verdict:
    status, outcomes, traces, matched = wire
    return Verdict(status, [outcome_from_wire(o) for o in outcomes], traces, matched)


def plain(value: Any) -> Any:
    """`value` with str subclasses made str and tuples made lists: what marshal holds."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        return {plain(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value
