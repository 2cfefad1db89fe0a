"""The ``action-chain`` runner type: StackStorm's linear chains of actions
(engine.workflows.chain).

Like `orquesta`, a chain runs no process of its own: the workflows worker starts and steps
it as its links (ordinary executions) end. This entry names the runner type for packs and
the API, with StackStorm's runner parameters; `run` is never the way a chain runs.
"""

from __future__ import annotations

from engine.runners.base import FAILED, RunRequest, RunResult

NAME = "action-chain"


class ActionChainRunner:
    name = NAME
    parameters: dict[str, dict] = {
        "display_published": {
            "type": "boolean",
            "default": True,
            "description": "Intermediate published variables will be stored and displayed.",
        },
        "skip_notify": {
            "type": "array",
            "default": [],
            "description": "List of tasks to skip notifications for.",
        },
    }

    async def run(self, request: RunRequest) -> RunResult:
        return RunResult(
            FAILED, {"error": "a chain is started by the workflows worker, not run by a runner"}
        )
