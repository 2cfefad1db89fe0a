"""The ``noop`` runner: succeeds at once with an empty result, whatever the parameters."""

from __future__ import annotations

from engine.runners.base import SUCCEEDED, RunRequest, RunResult


class NoopRunner:
    name = "noop"
    parameters: dict[str, dict] = {}

    async def run(self, request: RunRequest) -> RunResult:
        return RunResult(SUCCEEDED, {})
