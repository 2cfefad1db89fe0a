"""The workflow part of the store protocol: Orquesta and action-chain runs stepped under a
lease and a version (engine.store.ops.workflows, workflow_pauses), and the inquiries
their `core.ask` tasks open (engine.store.ops.inquiries). Implemented by
engine.store.sql_workflows.SqlWorkflowRuns.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from engine.model.records import Execution, NewExecution, NewTriggerInstance, Page, WorkflowStep


class WorkflowStore(abc.ABC):
    # --- workflow runs (engine.store.ops.workflows) ------------------------------------

    @abc.abstractmethod
    async def request_pause(self, execution_id: str) -> tuple[Execution, str]:
        """A running (or resuming) workflow becomes `pausing`, with its subworkflows; its
        steps pause it once its running tasks have ended. Returns the workflow and its
        status before. NotFound if it is not a started workflow; Conflict if it cannot
        be paused now."""

    @abc.abstractmethod
    async def request_resume(self, execution_id: str) -> tuple[Execution, str]:
        """A pausing or paused workflow becomes `resuming`, with its subworkflows; its next
        step requests what was held back. As request_pause otherwise."""

    # --- inquiries (engine.store.ops.inquiries) --------------------------------------------

    @abc.abstractmethod
    async def open_inquiry(
        self,
        execution_id: str,
        lease_token: str,
        asked: Mapping[str, Any],
        triggers: Sequence[NewTriggerInstance] = (),
    ) -> Execution:
        """One transaction: the running ask execution becomes `pending` with `asked` as its
        result and no lease, an inquiry expiring after `asked["ttl"]` minutes (never for
        0) is recorded, `triggers` (its core.st2.generic.inquiry instance) are stored, and
        its parent workflow's run is made due. LeaseLost if the claim is no longer
        current."""

    @abc.abstractmethod
    async def list_inquiries(self, limit: int, offset: int) -> Page:
        """The pending inquiries' executions, newest first."""

    @abc.abstractmethod
    async def get_inquiry(self, execution_id: str) -> Execution:
        """The inquiry's execution, whatever its status; NotFound unless it is one."""

    @abc.abstractmethod
    async def respond_inquiry(
        self,
        execution_id: str,
        result: Mapping[str, Any],
        responder: str | None,
        generic: Callable[[Execution], Sequence[NewTriggerInstance]] | None = None,
    ) -> Execution:
        """One transaction: the pending inquiry ends `succeeded` with `result`, its parent's
        run is made due and the paused workflows up the tree become `resuming`.
        NotFound unless it is an inquiry; Conflict when it is no longer pending."""

    @abc.abstractmethod
    async def expire_inquiries(
        self,
        now: datetime | None = None,
        generic: Callable[[Execution], Sequence[NewTriggerInstance]] | None = None,
    ) -> list[Execution]:
        """Pending inquiries past their expiry at `now` (default: the current time) end
        `timeout` (result unchanged), resuming up the tree as an answer does; returns
        them. `generic` builds each one's generic trigger instances, as for
        finish_execution (and for respond_inquiry)."""

    @abc.abstractmethod
    async def start_workflow(
        self,
        execution_id: str,
        lease_token: str,
        state: Mapping[str, Any],
        children: Sequence[NewExecution],
        final_status: str | None = None,
        result: Any = None,
    ) -> Execution:
        """One transaction: the claimed (scheduled) workflow execution becomes `running`
        with no lease, its run is stored with `state`, its first `children` (each with
        `parent` set) are requested; with `final_status` it also ends at once (its input
        did not render). LeaseLost if the claim is no longer current."""

    @abc.abstractmethod
    async def claim_workflow_steps(self, limit: int, lease_seconds: float) -> list[WorkflowStep]:
        """Lease up to `limit` runs that are due (or whose lease expired), each with the
        children ended since its last step."""

    @abc.abstractmethod
    async def apply_workflow_step(
        self,
        step: WorkflowStep,
        state: Mapping[str, Any],
        applied: Sequence[str],
        children: Sequence[NewExecution],
        final_status: str | None = None,
        result: Any = None,
    ) -> Execution:
        """One transaction: the new state (LeaseLost unless the step's lease and version
        are still current), the `applied` children marked so, the new `children`
        requested, and with `final_status` the workflow ended with `result` (and its own
        parent's run made due) — or, with "paused" or "running", its pause or resume
        settled. Releases the lease; returns the workflow execution."""

    @abc.abstractmethod
    async def get_workflow_state(self, execution_id: str) -> Any:
        """The stored conductor state of a started workflow (as apply_workflow_step last
        wrote it), or None if the execution never started as a workflow."""
