"""Action chains in the workflows role: the jobs a chain's steps send to a step process.

A chain is run exactly like an Orquesta workflow (engine.workers.workflows, whose module
docstring tells the whole path): the same `workflow_runs` row, the same claims, the same
one-transaction steps, the same step processes (engine.workers.step_pool); only the
conductor differs (engine.workflows.chain, pure, run by engine.workers.step_jobs). This
module builds what that conductor reads — the action's parameters (unsealed for each
step, never stored in the state), StackStorm's `action_context` — and turns its link
requests into child executions with `context.chain` (the st2 CLI's task table reads
`context.chain.name`) and `parent`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from engine.model.records import Execution, NewExecution, WorkflowStep
from engine.process.runtime import Runtime
from engine.workers.step_jobs import CHAIN_START, CHAIN_STEP, StepJob
from engine.workflows.chain import LinkRequest


def start_job(runtime: Runtime, execution: Execution, action: Any) -> StepJob:
    return _job(runtime, execution, action, CHAIN_START)


def step_job(runtime: Runtime, step: WorkflowStep, action: Any, state: dict) -> StepJob:
    finished = tuple(
        (
            ((child.context or {}).get("chain") or {}).get("name", ""),
            child.status,
            child.result,
            child.id,
            _time(child.created_at),
            _time(child.finished_at),
        )
        for child in step.finished
    )
    job = _job(runtime, step.workflow, action, CHAIN_STEP)
    return StepJob(
        kind=job.kind,
        action=job.action,
        status=step.workflow.status,
        state=state,
        inputs=job.inputs,
        context=job.context,
        finished=finished,
        active=step.active,
        paused=step.paused,
        settling=step.settling,
        asking=step.asking,
        display_published=job.display_published,
        max_links=job.max_links,
    )


def _job(runtime: Runtime, execution: Execution, action: Any, kind: str) -> StepJob:
    parameters = runtime.sealer.unseal(execution.parameters or {})
    runner_parameters, action_parameters = action.prepare_parameters(parameters)
    return StepJob(
        kind=kind,
        action=action.ref,
        status=execution.status,
        inputs=action_parameters,
        context={"parent": _parent(execution)},
        display_published=runner_parameters.get("display_published", True) is not False,
        max_links=runtime.settings.workers.max_chain_links,
    )


def _parent(chain: Execution) -> dict[str, Any]:
    # StackStorm's parent context: the chain's id and the chain's own context.
    return {**(chain.context or {}), "execution_id": chain.id}


def children(runtime: Runtime, chain: Execution, requests: list[LinkRequest]) -> list[NewExecution]:
    """The links' child executions, each with what it notifies."""
    notify = _notify(runtime, chain)
    return [_child(chain, request, notify) for request in requests]


def _notify(runtime: Runtime, chain: Execution) -> Callable[[LinkRequest], dict[str, Any]]:
    """What each link's child notifies, as StackStorm's action-chain runner and
    st2common's create_request decide it: nothing for a link named in the chain's
    `skip_notify`; else the child action's own `notify` when it has one; else the link's
    `notify`, else the chain action's. Given to the child as `context["notify"]`
    (engine.model.generic_triggers.notify_for)."""
    action = runtime.packs.action(chain.action)
    runner_parameters, _ = action.prepare_parameters(runtime.sealer.unseal(chain.parameters or {}))
    skip = runner_parameters.get("skip_notify") or []
    skip = set(skip) if isinstance(skip, list) else set()

    def choose(request: LinkRequest) -> dict[str, Any]:
        if request.link.name in skip:
            return {"notify": {}}
        if runtime.action_known(request.action) and runtime.packs.action(request.action).notify:
            return {}
        chosen = request.link.notify or action.notify
        return {"notify": dict(chosen)} if chosen else {}

    return choose


def _child(
    chain: Execution, request: LinkRequest, notify: Callable[[LinkRequest], dict[str, Any]]
) -> NewExecution:
    user = (chain.context or {}).get("user")
    return NewExecution(
        action=request.action,
        parameters=dict(request.parameters),
        context={
            "user": user,
            "parent": _parent(chain),
            "chain": {**request.link.context(), "index": request.index},
            **notify(request),
        },
        parent=chain.id,
    )


def _time(value: datetime | None) -> str | None:
    # StackStorm's isotime: UTC with microseconds and a Z.
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
