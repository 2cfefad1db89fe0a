"""Action chains in the workflows role: a chain started and stepped through its conductor.

A chain is run exactly like an Orquesta workflow (engine.workers.workflows, whose module
docstring tells the whole path): the same `workflow_runs` row, the same claims, the same
one-transaction steps; only the conductor differs (engine.workflows.chain, pure). This
module builds what that conductor reads — the action's parameters (unsealed for each
step, never stored in the state), StackStorm's `action_context`, st2kv — and turns its
link requests into child executions with `context.chain` (the st2 CLI's task table reads
`context.chain.name`) and `parent`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from engine.errors import ActionError
from engine.model.records import CANCELING, RUNNING, Execution, NewExecution, WorkflowStep
from engine.process.runtime import Runtime
from engine.rules.enforce import RULE_USER
from engine.rules.parameter_kinds import kinds_for_runner
from engine.store.ops.workflow_pauses import PAUSED, PAUSING, RESUMING
from engine.workers.workflow_settling import settled_status
from engine.workflows.chain import COMPLETED, ChainConductor, ChainScope, LinkRequest

Outcome = tuple[dict, list[NewExecution], Any, Any]


async def load_st2kv(runtime: Runtime, execution: Execution) -> Any:
    """st2kv for templates rendered as the chain's user (loaded before the conductor runs
    in its thread; it does no I/O itself)."""
    user = (execution.context or {}).get("user")
    return await runtime.datastore.st2kv(user if isinstance(user, str) and user else RULE_USER)


def started(runtime: Runtime, execution: Execution, action: Any, kv: Any) -> Outcome:
    conductor, requests = ChainConductor.start(action.workflow, _scope(runtime, execution, kv))
    notify = _notify(runtime, execution)
    children = [_child(execution, request, notify) for request in requests]
    return conductor.state, children, *_end_of(conductor, active=0, requested=len(children))


def stepped(runtime: Runtime, step: WorkflowStep, kv: Any) -> Outcome:
    chain = step.workflow
    action = runtime.packs.action(chain.action)
    if action.workflow is None:
        raise ActionError(action.broken or f"action {action.ref!r} is not an action chain")
    conductor = ChainConductor(action.workflow, step.state, _scope(runtime, chain, kv))
    requests: list[LinkRequest] = []
    if chain.status == CANCELING:
        conductor.cancel()  # no link starts; it ends once its running link has
    elif chain.status == PAUSING and conductor.status == RUNNING:
        conductor.pause()  # no link starts; paused once its running link has ended
    elif chain.status == RESUMING and conductor.status in (PAUSING, PAUSED):
        requests.extend(conductor.resume())
    for child in step.finished:
        link = (child.context or {}).get("chain") or {}
        requests.extend(
            conductor.link_finished(
                link.get("name", ""),
                child.status,
                child.result,
                execution_id=child.id,
                created_at=_time(child.created_at),
                updated_at=_time(child.finished_at),
                resumed=chain.status in (PAUSED, RESUMING),
            )
        )
    notify = _notify(runtime, chain)
    children = [_child(chain, request, notify) for request in requests]
    final, result = _end_of(conductor, step.active, len(children))
    if final is None:
        final = settled_status(step, conductor.status, len(children))
    return conductor.state, children, final, result


def _scope(runtime: Runtime, execution: Execution, kv: Any) -> ChainScope:
    parameters = runtime.sealer.unseal(execution.parameters or {})
    action = runtime.packs.action(execution.action)
    runner_parameters, action_parameters = action.prepare_parameters(parameters)
    return ChainScope(
        parameters=action_parameters,
        action_context={"parent": _parent(execution)},
        st2kv=kv,
        action_exists=runtime.action_known,
        parameter_kinds=lambda ref: kinds_for_runner(runtime.packs.action(ref).runner_type),
        display_published=runner_parameters.get("display_published", True) is not False,
        max_links=runtime.settings.workers.max_chain_links,
    )


def _parent(chain: Execution) -> dict[str, Any]:
    # StackStorm's parent context: the chain's id and the chain's own context.
    return {**(chain.context or {}), "execution_id": chain.id}


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


def _end_of(conductor: ChainConductor, active: int, requested: int) -> tuple[Any, Any]:
    """(final status, result) once the chain has ended and no link runs any more."""
    if conductor.status not in COMPLETED or active or requested:
        return None, None
    return conductor.status, conductor.result()


def _time(value: datetime | None) -> str | None:
    # StackStorm's isotime: UTC with microseconds and a Z.
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
