"""The ``inquirer`` runner (StackStorm's `core.ask`): asks a person, runs nothing.

Its run ends at once `pending` with what was asked (engine.packs.inquiry.asked); the
actions worker stores that as an open inquiry instead of an end, and the execution stays
pending until `PUT /api/v1/inquiries/<id>` answers it (or its ttl runs out). A schema that
is no JSON schema fails the ask at once, naming the problem.
"""

from __future__ import annotations

from engine.errors import ActionError
from engine.model.records import INQUIRY_PENDING
from engine.packs.inquiry import RUNNER_PARAMETERS, RUNNER_TYPE, asked
from engine.runners.base import FAILED, RunRequest, RunResult


class InquirerRunner:
    name = RUNNER_TYPE
    parameters = RUNNER_PARAMETERS

    async def run(self, request: RunRequest) -> RunResult:
        try:
            return RunResult(INQUIRY_PENDING, asked(request.runner_parameters))
        except ActionError as exc:
            return RunResult(FAILED, {"error": str(exc)})
