"""The ``orquesta`` runner type: StackStorm's workflows (engine.workflows).

A workflow runs no process of its own: the actions worker hands a claimed workflow
execution to engine.workers.workflows, which starts it and steps it as its children
(ordinary executions) end. This entry exists so that packs name the runner type, the API
lists it, and its (empty) runner parameters are known; `run` is never the way a workflow
runs.
"""

from __future__ import annotations

from engine.runners.base import FAILED, RunRequest, RunResult

NAME = "orquesta"


class OrquestaRunner:
    name = NAME
    parameters: dict[str, dict] = {}

    async def run(self, request: RunRequest) -> RunResult:
        return RunResult(
            FAILED, {"error": "a workflow is started by the workflows worker, not run by a runner"}
        )
