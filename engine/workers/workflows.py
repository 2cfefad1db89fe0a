"""The workflows worker: Orquesta workflows and action chains started and stepped
through their conductors (engine.workers.chains builds a chain's).

A workflow is an execution like any other: rules and the API request it, and the actions
worker claims it. Seeing the `orquesta` runner, the actions worker calls `start_workflow`
here: the conductor (engine.workflows.conductor, pure) renders the input and decides the
first tasks, and one store transaction marks the workflow running, stores the run and
requests the first task runs as child executions — ordinary executions the actions
worker runs. Starting there, not in this role, keeps one claim path for every execution
whoever requested it, and costs no extra hop.

Each child's end makes its workflow's run due in the child's own transaction
(engine.store.ops.lineage); this role claims due runs with a lease, feeds the ended
children to the conductor and applies its answer — new state, new children, the
workflow's end — in one transaction checked against the run's version. A crash anywhere
loses nothing and repeats nothing: an unapplied step is taken again by the next claim.

The conductor never runs in this process: each start and step is a job for a step
child process (engine.workers.step_pool, engine.workers.step_jobs) whose watchdog, in
this process, kills it past `workers.workflow_step_timeout` (and which runs under an
address-space limit): the workflow then fails naming the task, the expression and the
budget, and the event loop, which also serves HTTP, never waits on an expression.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from engine.errors import ActionError, EngineError, LeaseLost, StoreError, WorkflowStepUnavailable
from engine.model.records import (
    CANCELING,
    FAILED,
    TERMINAL_EXECUTION_STATUSES,
    Execution,
    NewExecution,
    WorkflowStep,
)
from engine.packs.action import ACTION_CHAIN
from engine.process.runtime import Runtime
from engine.rules.enforce import RULE_USER
from engine.store import codec
from engine.workers import chains, sleep_until
from engine.workers.generic_triggers import generic_source
from engine.workers.step_jobs import RERUN, START, STEP, StepJob, StepOutcome
from engine.workers.step_pool import pool_of
from engine.workflows.conductor import ActionRequest
from engine.workflows.contents import ActionInputs, content_errors
from engine.workflows.statuses import RUNNING

log = logging.getLogger(__name__)

# The key of a stored state that is sealed whole (engine.secrets.sealing): the workflow
# was given a secret input, or a step decrypted a secret datastore value (st2kv(...,
# decrypt=true), `| decrypt_kv`), which its state may hold. Once sealed, it stays so.
SEALED_STATE = "sealed"
# Seconds between two looks for inquiries past their ttl (counted in minutes).
INQUIRY_EXPIRY_INTERVAL = 10.0
# Runs stepped per claim.
STEP_BATCH = 32
# A workflow whose stored state grows past this fails instead of writing it (each step
# rewrites the whole state: a workflow publishing ever larger values would otherwise
# slow every step and fill the database).
MAX_STATE_BYTES = 8 << 20
# A step's answer up to this size is bounded on the event loop (microseconds); a larger
# one in a thread.
_INLINE_STATE_BYTES = 64 << 10


async def run_workflows_worker(runtime: Runtime, stop: asyncio.Event) -> None:
    settings = runtime.settings.workers
    store = runtime.store
    log.info("workflows worker started")
    loop = asyncio.get_running_loop()
    next_expiry = loop.time()
    try:
        while not stop.is_set():
            if loop.time() >= next_expiry:
                next_expiry = loop.time() + INQUIRY_EXPIRY_INTERVAL
                await expire_inquiries(runtime)
            try:
                steps = await store.claim_workflow_steps(STEP_BATCH, settings.lease_seconds)
            except StoreError as exc:
                log.error("workflows worker cannot claim steps: %s", exc)
                await sleep_until(stop, asyncio.sleep(settings.poll_interval))
                continue
            for step in steps:
                await step_workflow(runtime, step)
            if not steps:
                await sleep_until(stop, store.wait_for_work("workflows", settings.poll_interval))
    finally:
        log.info("workflows worker stopped")


async def expire_inquiries(runtime: Runtime) -> None:
    """StackStorm's inquiry garbage collection: an inquiry past its ttl ends `timeout`
    and its workflow goes on (its `failed()` transitions)."""

    def generic(execution: Execution) -> Any:
        source = generic_source(runtime, execution)  # None: no rule listens
        return source(execution) if source is not None else []

    try:
        expired = await runtime.store.expire_inquiries(generic=generic)
    except StoreError as exc:
        log.error("timing out inquiries failed: %s", exc)
        return
    for execution in expired:
        log.info("inquiry %s timed out", execution.id)
        runtime.observe("execution_finished", execution)


# --- starting ------------------------------------------------------------------------


async def start_workflow(runtime: Runtime, execution: Execution, action: Any) -> None:
    """Start a claimed (scheduled) orquesta or action-chain execution; see the module
    docstring."""
    token = execution.lease_token or ""
    extra = {"execution": execution.id, "action": execution.action}
    chain = action.runner_type == ACTION_CHAIN
    revealed, wire = False, 0
    if action.broken is not None or action.workflow is None:
        state, children, final, result = {}, [], FAILED, _errors_result(action.broken or "", chain)
    else:
        try:
            kv = await runtime.datastore.st2kv_snapshot(_user(execution))
        except StoreError as exc:
            log.error("loading the datastore for %s failed: %s", execution.id, exc, extra=extra)
            return  # its lease expires and it is claimed again
        try:
            problems = [] if chain else content_errors(action.workflow, _action_inputs(runtime))
            if problems:
                # As StackStorm: checked before anything runs, every problem reported.
                state, children, final = {}, [], FAILED
                result = {"errors": problems, "output": None}
            else:
                job = await _first_job(runtime, execution, action, chain)
                job = dataclasses.replace(job, trusted=await inputs_trusted(runtime, execution))
                outcome = await _run(runtime, job, action.workflow, kv)
                state, final, result = outcome.state, outcome.final, outcome.result
                children = _children(runtime, execution, outcome.requests, chain)
                revealed, wire = outcome.revealed, outcome.wire_bytes
        except WorkflowStepUnavailable as exc:
            log.error("starting workflow %s: %s", execution.id, exc, extra=extra)
            return  # its lease expires and it is claimed again
        except StoreError as exc:
            log.error("reading the re-run workflow for %s failed: %s", execution.id, exc)
            return  # its lease expires and it is claimed again
        except EngineError as exc:  # a bad parameter, its budget exceeded...
            state, children, final, result = {}, [], FAILED, _errors_result(str(exc), chain)
        except Exception as exc:  # a bug must not leave it to be claimed again forever
            log.exception("starting workflow %s failed", execution.id, extra=extra)
            message = f"the workflow cannot start: {type(exc).__name__}: {exc}"
            state, children, final, result = {}, [], FAILED, _errors_result(message, chain)
    sealed = revealed or _has_secret_inputs(execution, action)
    state, final, result = await _stored(runtime, state, final, result, chain, sealed, wire)
    try:
        workflow = await runtime.store.start_workflow(
            execution.id, token, state, children, final, result
        )
    except LeaseLost:
        log.warning("workflow %s was re-claimed before it started", execution.id, extra=extra)
        return
    except StoreError as exc:
        log.error("starting workflow %s failed: %s", execution.id, exc, extra=extra)
        return  # its lease expires and it is claimed again
    log.info("workflow %s %s (%d task(s) requested)", execution.id, workflow.status, len(children))
    if final is not None:
        runtime.observe("execution_finished", workflow)


async def _first_job(runtime: Runtime, execution: Execution, action: Any, chain: bool) -> StepJob:
    """The job that starts `execution`: a chain's, a re-run from tasks, or a start."""
    tasks = _rerun_tasks(execution)
    if chain:
        if tasks:
            raise ActionError("re-running from tasks is only supported for Orquesta workflows")
        return chains.start_job(runtime, execution, action)
    context = {"st2": _st2_context(runtime, execution, action)}
    if tasks:
        options = execution.context["re-run"]
        reset = options.get("reset") if isinstance(options.get("reset"), list) else []
        return StepJob(
            kind=RERUN,
            action=action.ref,
            state=await _rerun_state(runtime, execution),
            context=context,
            rerun_tasks=tuple(tasks),
            rerun_reset=tuple(r for r in reset if isinstance(r, str)),
        )
    parameters = runtime.sealer.unseal(execution.parameters or {})
    _, inputs = action.prepare_parameters(parameters)
    return StepJob(kind=START, action=action.ref, inputs=inputs, context=context)


# How far inputs_trusted walks up to the execution a person or a trigger requested.
MAX_TRUST_DEPTH = 32


async def inputs_trusted(runtime: Runtime, execution: Execution) -> bool:
    """Whether this workflow's values come from a person allowed to run it — requested
    through the API or CLI (their key's role and grants checked then), or by a workflow,
    re-run or retry of such a request — rather than from a trigger: a rule, a webhook, a
    sensor, a timer. A trusted workflow's expressions may write whole shell commands and
    URLs, as StackStorm's do (`core.local cmd=<% ctx(cmd) %>`); any other keeps payload
    values data. Anything unknown on the way counts as a trigger."""
    current = execution
    for _ in range(MAX_TRUST_DEPTH):
        context = current.context or {}
        if "rule" in context or "trigger_instance" in context:
            return False
        earlier = current.parent or _origin(context)
        if earlier is None:
            return True
        try:
            current = await runtime.store.get_execution(earlier)
        except StoreError:  # gone (purged) or unreadable: not known to be a person's
            return False
    return False


def _origin(context: dict[str, Any]) -> str | None:
    """The execution a re-run or a policy retry repeats (its values are that one's)."""
    rerun = context.get("re-run")
    if isinstance(rerun, dict) and isinstance(rerun.get("ref"), str):
        return rerun["ref"]
    retry = (context.get("policies") or {}).get("retry")
    if isinstance(retry, dict) and isinstance(retry.get("retried_liveaction_id"), str):
        return retry["retried_liveaction_id"]
    return None


def _rerun_tasks(execution: Execution) -> list[str]:
    """The tasks a re-run starts from (StackStorm's `context["re-run"]["tasks"]`)."""
    options = (execution.context or {}).get("re-run")
    tasks = options.get("tasks") if isinstance(options, dict) else None
    return [t for t in tasks if isinstance(t, str)] if isinstance(tasks, list) else []


async def _rerun_state(runtime: Runtime, execution: Execution) -> dict[str, Any]:
    """The ended workflow's stored state a re-run from tasks continues (unsealed)."""
    original = execution.context["re-run"].get("ref")
    state = await runtime.store.get_workflow_state(str(original))
    if state is None:
        raise ActionError(f"execution {original!r} has no workflow state to re-run from")
    if SEALED_STATE in state:
        state = await asyncio.to_thread(runtime.sealer.unseal_value, state[SEALED_STATE])
    return state


def _action_inputs(runtime: Runtime) -> Callable[[str], ActionInputs | None]:
    """What each registered action takes, for the content check at start."""

    def inputs(ref: str) -> ActionInputs | None:
        if not runtime.action_known(ref):
            return None
        specs = runtime.packs.action(ref).parameter_specs
        required = tuple(n for n, p in specs.items() if p.required and not p.has_default)
        return ActionInputs(names=frozenset(specs), required=required)

    return inputs


def _children(
    runtime: Runtime, execution: Execution, requests: list[Any], chain: bool
) -> list[NewExecution]:
    if chain:
        return chains.children(runtime, execution, requests)
    return [_child(execution, request) for request in requests]


async def _run(runtime: Runtime, job: StepJob, spec: Any, kv: Any) -> StepOutcome:
    """The conductor's answer to `job`, from a step process (engine.workers.step_pool)."""
    pool = pool_of(runtime)
    kinds = pool.kinds_for(runtime.packs, lambda: _all_parameter_kinds(runtime))
    return await pool.run(job, spec, kv, kinds)


def _all_parameter_kinds(runtime: Runtime) -> dict[str, dict[str, str]]:
    """Every action's parameters that are shell commands or URLs (a workflow's task input
    quotes what its expressions insert there); the keys are the actions that exist."""
    return {
        f"{pack_ref}.{name}": dict(runtime.parameter_kinds(f"{pack_ref}.{name}"))
        for pack_ref, pack in runtime.packs.packs.items()
        for name in pack.actions
    }


def _user(execution: Execution) -> str:
    # st2kv('user.x') reads the workflow's user's keys.
    user = (execution.context or {}).get("user")
    return user if isinstance(user, str) and user else RULE_USER


def _st2_context(runtime: Runtime, execution: Execution, action: Any) -> dict[str, Any]:
    # ctx(st2): what StackStorm's workflows read of their runtime context.
    context = execution.context or {}
    return {
        "action_execution_id": execution.id,
        "workflow_execution_id": execution.id,
        "action": action.ref,
        "pack": action.pack,
        "user": context.get("user"),
        "runner": "orquesta",
        "api_url": runtime.settings.server.public_api_url(),
    }


def _child(workflow: Execution, request: ActionRequest) -> NewExecution:
    """A task run: an ordinary execution whose parent is the workflow (StackStorm's shape
    of `context.parent` and `context.orquesta`)."""
    context = workflow.context or {}
    user = context.get("user")
    return NewExecution(
        action=request.action,
        parameters=dict(request.input),
        context={
            "user": user,
            "parent": {"execution_id": workflow.id, "user": user},
            "orquesta": {
                "workflow_execution_id": workflow.id,
                "task_name": request.task,
                "task_id": request.task,
                "route": request.route,
                "task_route": request.route,
                "item_id": request.item_id,
                "key": request.key,
            },
        },
        parent=workflow.id,
        delay=request.delay,
    )


# --- stepping ------------------------------------------------------------------------


async def step_workflow(runtime: Runtime, step: WorkflowStep) -> None:
    """Apply the children that ended since the run's last step (one transaction)."""
    workflow = step.workflow
    applied = [child.id for child in step.finished]
    if workflow.status in TERMINAL_EXECUTION_STATUSES:
        # Ended already (failed or canceled while tasks ran): their ends change nothing.
        state, children, final, result = step.state, [], None, None
    else:
        chain = _is_chain(runtime, workflow)
        try:
            kv = await runtime.datastore.st2kv_snapshot(_user(workflow))
        except StoreError as exc:
            log.error("loading the datastore for %s failed: %s", workflow.id, exc)
            return  # the lease expires and the step is taken again
        try:
            state, children, final, result = await _conducted(runtime, step, kv, chain)
        except WorkflowStepUnavailable as exc:
            log.error("stepping workflow %s: %s", workflow.id, exc)
            return  # the lease expires and the step is taken again
        except EngineError as exc:
            state, children, final = step.state, [], FAILED
            result = _errors_result(f"the workflow cannot go on: {exc}", chain)
        except Exception as exc:  # a bug must not leave the run re-claimed forever
            log.exception("stepping workflow %s failed", workflow.id)
            state, children, final = step.state, [], FAILED
            message = f"the workflow cannot go on: {type(exc).__name__}: {exc}"
            result = _errors_result(message, chain)
    try:
        ended = await runtime.store.apply_workflow_step(
            step, state, applied, children, final, result
        )
    except LeaseLost:
        log.warning("workflow %s: another worker took this step over", workflow.id)
        return
    except StoreError as exc:
        log.error("stepping workflow %s failed: %s", workflow.id, exc)
        return  # the lease expires and the step is taken again
    if final in TERMINAL_EXECUTION_STATUSES:
        log.info("workflow %s %s", workflow.id, ended.status)
        runtime.observe("execution_finished", ended)
    elif ended.status == RUNNING and state.get("status") == CANCELING:
        # A task run was canceled: StackStorm cancels its workflow, and with it the
        # workflow's other running tasks (the store cascades; a later step ends it).
        try:
            await runtime.store.request_cancel(workflow.id)
        except StoreError as exc:
            log.error("canceling workflow %s failed: %s", workflow.id, exc)


def _is_chain(runtime: Runtime, execution: Execution) -> bool:
    known = runtime.action_known(execution.action)
    return known and runtime.packs.action(execution.action).runner_type == ACTION_CHAIN


async def _conducted(
    runtime: Runtime, step: WorkflowStep, kv: Any, chain: bool
) -> tuple[dict, list[NewExecution], Any, Any]:
    """A step's new state (bounded, and sealed when the stored one was or a secret was
    decrypted into it), children, final status and result."""
    workflow = step.workflow
    action = runtime.packs.action(workflow.action)
    if action.workflow is None:
        kind = "an action chain" if chain else "a workflow"
        raise ActionError(action.broken or f"action {action.ref!r} is not {kind}")
    sealed = SEALED_STATE in step.state
    state = step.state
    if sealed:
        state = await asyncio.to_thread(runtime.sealer.unseal_value, step.state[SEALED_STATE])
    job = (chains.step_job if chain else _step_job)(runtime, step, action, state)
    outcome = await _run(runtime, job, action.workflow, kv)
    children = _children(runtime, workflow, outcome.requests, chain)
    new_state, final, result = await _stored(
        runtime,
        outcome.state,
        outcome.final,
        outcome.result,
        chain,
        sealed or outcome.revealed,
        outcome.wire_bytes,
    )
    return new_state, children, final, result


def _step_job(runtime: Runtime, step: WorkflowStep, action: Any, state: dict) -> StepJob:
    finished = []
    for child in step.finished:
        task = (child.context or {}).get("orquesta") or {}
        finished.append(
            (
                task.get("task_name", ""),
                task.get("route", 0),
                child.status,
                child.result,
                task.get("item_id"),
            )
        )
    return StepJob(
        kind=STEP,
        action=action.ref,
        status=step.workflow.status,
        state=state,
        finished=tuple(finished),
        active=step.active,
        paused=step.paused,
        settling=step.settling,
        asking=step.asking,
    )


async def _stored(
    runtime: Runtime,
    state: dict,
    final: str | None,
    result: Any,
    chain: bool,
    sealed: bool,
    size_hint: int,
) -> tuple[dict, str | None, Any]:
    """The state as it is written: bounded, and sealed when it holds a secret. A large
    or sealed one is measured (and encrypted) in a thread, off the event loop."""
    if sealed or size_hint > _INLINE_STATE_BYTES:
        return await asyncio.to_thread(
            _bounded_and_sealed, runtime, state, final, result, chain, sealed
        )
    return _bounded_and_sealed(runtime, state, final, result, chain, sealed)


def _bounded_and_sealed(
    runtime: Runtime, state: dict, final: str | None, result: Any, chain: bool, sealed: bool
) -> tuple[dict, str | None, Any]:
    state, final, result = _bounded(state, final, result, chain)
    return (_sealed(runtime, state) if sealed else state), final, result


def _has_secret_inputs(execution: Execution, action: Any) -> bool:
    given = execution.parameters or {}
    return any(given.get(name) is not None for name in action.secret_parameters)


def _sealed(runtime: Runtime, state: dict) -> dict:
    """A state holding secret inputs, sealed at rest as the inputs themselves are."""
    return {SEALED_STATE: runtime.sealer.seal_value(state)}


def _bounded(
    state: dict, final: str | None, result: Any, chain: bool = False
) -> tuple[dict, str | None, Any]:
    """The state as given, or — grown past MAX_STATE_BYTES — a failed workflow's."""
    try:
        size = len(codec.dumps(state, "workflow state"))
        if size <= MAX_STATE_BYTES:
            return state, final, result
        message = (
            f"the workflow's state grew to {size:,} bytes, over the limit of "
            f"{MAX_STATE_BYTES:,}: publish smaller values"
        )
    except StoreError as exc:  # a value JSON cannot hold (NaN, a NUL character)
        message = f"the workflow's state cannot be stored: {exc}"
    small = {"version": state.get("version"), "status": FAILED, "output": None}
    return small, FAILED, _errors_result(message, chain)


def _errors_result(message: str, chain: bool = False) -> dict[str, Any]:
    if chain:  # StackStorm's action-chain runner reports a top-level failure so
        return {"error": message}
    return {"errors": [{"type": "error", "message": message}], "output": None}
