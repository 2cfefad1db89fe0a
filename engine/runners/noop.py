"""The ``noop`` runner: succeeds at once with an empty result, whatever the parameters."""

from __future__ import annotations

from engine.runners.base import SUCCEEDED, RunRequest, RunResult


class NoopRunner:
    name = "noop"
    # Runs in the engine and returns at once: the actions worker claims its executions in
    # batches and records each start together with its end (engine.workers.actions).
    instant = True
    parameters: dict[str, dict] = {}

    async def run(self, request: RunRequest) -> RunResult:
        return RunResult(SUCCEEDED, {})
