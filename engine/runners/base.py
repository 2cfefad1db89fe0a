"""What every runner takes and returns, and the result helpers they share.

A runner executes one action run and reports it as plain JSON-serialisable data. It never
raises for a problem of that run (a missing parameter, a script that cannot start, a refused
URL): it returns a ``failed`` result with an ``error`` string, so the execution worker has
one path to record. Driver errors (aiohttp, OSError) never leave this package.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

SUCCEEDED = "succeeded"
FAILED = "failed"
TIMEOUT = "timeout"

MASK = "********"

# Called with each URL an HTTP runner is about to request (redirect hops included); raises
# (e.g. engine.errors.DestinationRefused) to refuse it; its return value is ignored.
# engine.outbound.ssrf.DestinationGuard.check_url fits.
DestinationGuard = Callable[[str], Awaitable[object]]


# Stores a trigger instance as /webhooks/st2 does (the type's payload_schema checked):
# (trigger ref, payload, trace tag) -> the instance id; raises EngineError when refused.
TriggerDispatch = Callable[[str, Any, str | None], Awaitable[str]]


# A Python action's datastore call, relayed from its child (engine.runners.action_service):
# (action class name, method get | set | delete | list, arguments) -> the answer; raises
# EngineError when refused. The caller knows the pack and names local keys after it.
ActionDatastore = Callable[[Any, Any, dict[str, Any]], Awaitable[Any]]


# Told a running action's output as it is read: (output_type "stdout" | "stderr", text).
# Called on the event loop; it must not block.
OutputSink = Callable[[str, str], None]


class ProcessWatch(Protocol):
    """Told of each process group a run starts, and when the runner is done with it, so
    that the group can be killed if the worker dies meanwhile (engine.workers.leftovers)."""

    def started(self, pgid: int, timeout: float) -> None: ...

    def ended(self, pgid: int) -> None: ...


@dataclass(frozen=True)
class RunRequest:
    execution_id: str
    # Already merged with defaults and validated by the caller.
    runner_parameters: dict[str, Any]
    # The action's own parameters: script arguments, Python run() keyword arguments.
    action_parameters: dict[str, Any]
    # Absolute path of the script or module for script runners.
    entry_point: str | None
    # Parameter name -> position, for positional script arguments.
    parameter_positions: dict[str, int]
    # Names (action or runner parameters) whose values are masked in results.
    secret_parameters: frozenset[str]
    # Seconds, already resolved: execution > action > runner default.
    timeout: float
    # The pack config, given to Python actions as ``self.config``.
    action_config: dict[str, Any]
    # Bytes of stdout and of stderr kept each; the rest is dropped and marked.
    max_output: int = 1_048_576
    # Per-run URL check for the http-request runner (overrides the runner's own).
    destination_guard: DestinationGuard | None = field(default=None, compare=False)
    # Told of the process groups this run starts (shell, script and Python runners).
    process_watch: ProcessWatch | None = field(default=None, compare=False)
    # How core.inject_trigger and core.announcement store their trigger instances.
    dispatch_trigger: TriggerDispatch | None = field(default=None, compare=False)
    # The Python that runs a python-script action: its pack's virtualenv's, or None for
    # the engine's own (engine.runners.pack_virtualenv).
    python: str | None = None
    # What a Python action's self.action_service reaches the datastore through.
    datastore: ActionDatastore | None = field(default=None, compare=False)
    # Told the output of the run's process as it runs (shell, script and Python runners).
    output_sink: OutputSink | None = field(default=None, compare=False)

    def parameter(self, name: str, default: Any = None) -> Any:
        """A parameter looked up in runner parameters first, then action parameters.

        StackStorm declares some inputs (http ``method``, ``body``...) as action parameters
        of the action rather than of the runner; both places are accepted.
        """
        if self.runner_parameters.get(name) is not None:
            return self.runner_parameters[name]
        if self.action_parameters.get(name) is not None:
            return self.action_parameters[name]
        return default

    def secret_values(self) -> list[str]:
        """The texts to hide: every non-empty value of a secret parameter, longest first."""
        found: list[str] = []
        for params in (self.runner_parameters, self.action_parameters):
            for name in self.secret_parameters:
                if name in params:
                    found.extend(_leaf_texts(params[name]))
        unique = {text for text in found if text}
        # Longest first so a secret containing another is replaced whole.
        return sorted(unique, key=len, reverse=True)


@dataclass(frozen=True)
class RunResult:
    status: str  # "succeeded" | "failed" | "timeout"
    result: dict[str, Any]  # JSON-serialisable


class Runner(Protocol):
    name: str
    # StackStorm-style runner_parameters: name -> {type, description, default, ...}.
    parameters: dict[str, dict]
    # Optional `instant = True`: run() returns at once without I/O or side effects outside
    # the engine (noop), so a start need not be recorded before it runs.

    async def run(self, request: RunRequest) -> RunResult: ...


def _leaf_texts(value: Any) -> Iterable[str]:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, int | float):
        yield str(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _leaf_texts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaf_texts(item)


def mask_secrets(value: Any, secrets: list[str]) -> Any:
    """``value`` with every occurrence of each secret inside any string replaced by MASK."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {key: mask_secrets(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [mask_secrets(item, secrets) for item in value]
    return value


def failed(error: str, **extra: Any) -> RunResult:
    """A failed run that never got to (or past) starting, with the reason."""
    return RunResult(FAILED, {**extra, "error": error})


def to_json_safe(value: Any) -> Any:
    """``value`` as plain JSON data; anything JSON cannot hold becomes its ``str``."""
    return json.loads(json.dumps(value, default=str))
