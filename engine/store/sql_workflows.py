"""The workflow-run methods of the store contract (engine.store.base), written once over
a backend's dialect: a mixin of engine.store.sql_store.SqlStore, which supplies `_write`,
`dialect`, `sealer` and `_wake`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from engine.model.records import (
    TERMINAL_EXECUTION_STATUSES,
    Execution,
    NewExecution,
    NewTriggerInstance,
    Page,
    WorkflowStep,
    utcnow,
)
from engine.store import codec
from engine.store.ops.generic_triggers import GenericSource


class SqlWorkflowRuns:
    """Workflow runs: start, claim a step, apply it; pause and resume; inquiries."""

    _read: Any
    _write: Any
    dialect: Any
    sealer: Any
    _wake: Any
    _ended_source: Any
    count_ingested: Any

    async def start_workflow(
        self,
        execution_id: str,
        lease_token: str,
        state: Mapping[str, Any],
        children: Sequence[NewExecution],
        final_status: str | None = None,
        result: Any = None,
    ) -> Execution:
        state_json, result_json = _step_json(state, final_status, result)
        children = [self.sealer.seal_execution(child) for child in children]
        generic, fired = self._ended_source()
        workflow = await self._write(
            self.dialect.start_workflow,
            execution_id,
            lease_token,
            state_json,
            children,
            final_status,
            result_json,
            utcnow(),
            generic,
        )
        self.count_ingested(sum(fired.values()))
        self._woken_by_step(children, workflow)
        return workflow

    async def claim_workflow_steps(self, limit: int, lease_seconds: float) -> list[WorkflowStep]:
        return await self._write(self.dialect.claim_workflow_steps, limit, lease_seconds, utcnow())

    async def apply_workflow_step(
        self,
        step: WorkflowStep,
        state: Mapping[str, Any],
        applied: Sequence[str],
        children: Sequence[NewExecution],
        final_status: str | None = None,
        result: Any = None,
    ) -> Execution:
        state_json, result_json = _step_json(state, final_status, result)
        children = [self.sealer.seal_execution(child) for child in children]
        generic, fired = self._ended_source()
        workflow = await self._write(
            self.dialect.apply_workflow_step,
            step.workflow.id,
            step.lease_token,
            step.version,
            state_json,
            list(applied),
            children,
            final_status,
            result_json,
            utcnow(),
            generic,
        )
        self.count_ingested(sum(fired.values()))
        self._woken_by_step(children, workflow)
        return workflow

    async def get_workflow_state(self, execution_id: str) -> Any:
        return await self._read(self.dialect.get_workflow_state, execution_id)

    async def request_pause(self, execution_id: str) -> tuple[Execution, str]:
        answer = await self._write(self.dialect.request_pause, execution_id, utcnow())
        self._wake("workflows")
        return answer

    async def request_resume(self, execution_id: str) -> tuple[Execution, str]:
        answer = await self._write(self.dialect.request_resume, execution_id, utcnow())
        self._wake("workflows")
        return answer

    async def open_inquiry(
        self,
        execution_id: str,
        lease_token: str,
        asked: Mapping[str, Any],
        triggers: Sequence[NewTriggerInstance] = (),
    ) -> Execution:
        now = utcnow()
        ttl = asked.get("ttl")
        # StackStorm: a ttl of 0 (or less) never times out.
        expires_at = now + timedelta(minutes=ttl) if isinstance(ttl, int) and ttl > 0 else None
        execution = await self._write(
            self.dialect.open_inquiry,
            execution_id,
            lease_token,
            codec.dumps(dict(asked), "inquiry"),
            expires_at,
            now,
            list(triggers),
        )
        self._wake("workflows")
        self.count_ingested(len(triggers))
        return execution

    async def list_inquiries(self, limit: int, offset: int) -> Page:
        return await self._read(self.dialect.list_inquiries, limit, offset)

    async def get_inquiry(self, execution_id: str) -> Execution:
        return await self._read(self.dialect.get_inquiry, execution_id)

    async def respond_inquiry(
        self,
        execution_id: str,
        result: Mapping[str, Any],
        responder: str | None,
        generic: GenericSource | None = None,
    ) -> Execution:
        result_json = codec.dumps(dict(result), "inquiry response")
        fired = _Counted(generic)
        answered = await self._write(
            self.dialect.respond_inquiry,
            execution_id,
            result_json,
            responder,
            utcnow(),
            fired.source,
        )
        self.count_ingested(fired.total)
        self._wake("workflows")
        return answered

    async def expire_inquiries(
        self, now: datetime | None = None, generic: GenericSource | None = None
    ) -> list[Execution]:
        fired = _Counted(generic)
        expired = await self._write(self.dialect.expire_inquiries, now or utcnow(), fired.source)
        self.count_ingested(fired.total)
        if expired:
            self._wake("workflows")
        return expired

    def _woken_by_step(self, children: Sequence[NewExecution], workflow: Execution) -> None:
        if children:
            self._wake("executions")
        if workflow.parent and workflow.status in TERMINAL_EXECUTION_STATUSES:
            self._wake("workflows")  # a subworkflow ended: its parent's run is due


class _Counted:
    """A generic trigger source that counts what it built, once per transaction try (a
    retried transaction builds again)."""

    def __init__(self, generic: GenericSource | None) -> None:
        self.generic = generic
        self.built: dict[str, int] = {}
        self.source = None if generic is None else self._build

    def _build(self, execution: Execution) -> Sequence[NewTriggerInstance]:
        assert self.generic is not None
        items = self.generic(execution)
        self.built[execution.id] = len(items)
        return items

    @property
    def total(self) -> int:
        return sum(self.built.values())


def _step_json(
    state: Mapping[str, Any], final_status: str | None, result: Any
) -> tuple[str, str | None]:
    # Besides the final statuses, a step settles a pause ("paused"; "pausing" when a task's
    # inquiry pauses the workflow while others still run) or a resume ("running").
    if final_status is not None and final_status not in ("pausing", "paused", "running"):
        codec.check_terminal_status(final_status)
    state_json = codec.dumps(state, "workflow state")
    result_json = None if final_status is None else codec.dumps(result, "workflow result")
    return state_json, result_json
