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

The conductor runs in a thread: an expression may take up to its time budget
(engine.workflows.yaql_engine.MAX_SECONDS) and the event loop keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

from engine.errors import ActionError, EngineError, LeaseLost, StoreError
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
from engine.rules.parameter_kinds import kinds_for_runner
from engine.store import codec
from engine.workers import chains, sleep_until
from engine.workers.generic_triggers import generic_source
from engine.workers.workflow_settling import settled_status
from engine.workflows.conductor import ActionRequest, WorkflowConductor
from engine.workflows.contents import ActionInputs, content_errors
from engine.workflows.context import KeyValueLookup
from engine.workflows.rerun import rerun
from engine.workflows.statuses import COMPLETED, PAUSED, PAUSING, RUNNING

log = logging.getLogger(__name__)

RESUMING = "resuming"  # the workflow execution's status while a resume is applied
# Marks a conductor state paused because a task waits for an answer, not by a person.
PAUSED_BY_INQUIRY = "paused_by_inquiry"
HELD = (PAUSING, PAUSED)  # conductor statuses that start no task

# The key of a stored state that is sealed whole (engine.secrets.sealing): the workflow
# was given a secret input, which its state holds.
SEALED_STATE = "sealed"
# Seconds between two looks for inquiries past their ttl (counted in minutes).
INQUIRY_EXPIRY_INTERVAL = 10.0
# Runs stepped per claim.
STEP_BATCH = 32
# A workflow whose stored state grows past this fails instead of writing it (each step
# rewrites the whole state: a workflow publishing ever larger values would otherwise
# slow every step and fill the database).
MAX_STATE_BYTES = 8 << 20


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
    if action.broken is not None or action.workflow is None:
        state, children, final, result = {}, [], FAILED, _errors_result(action.broken or "", chain)
    else:
        try:
            kv = await (chains.load_st2kv if chain else _st2kv)(runtime, execution)
        except StoreError as exc:
            log.error("loading the datastore for %s failed: %s", execution.id, exc, extra=extra)
            return  # its lease expires and it is claimed again
        try:
            if _rerun_tasks(execution):
                original = await _rerun_state(runtime, execution)
                state, children, final, result = await asyncio.to_thread(
                    _rerun_started, runtime, execution, action, kv, original
                )
            else:
                state, children, final, result = await asyncio.to_thread(
                    chains.started if chain else _started, runtime, execution, action, kv
                )
        except StoreError as exc:
            log.error("reading the re-run workflow for %s failed: %s", execution.id, exc)
            return  # its lease expires and it is claimed again
        except EngineError as exc:  # a bad parameter, an unreadable state...
            state, children, final, result = {}, [], FAILED, _errors_result(str(exc), chain)
        except Exception as exc:  # a bug must not leave it to be claimed again forever
            log.exception("starting workflow %s failed", execution.id, extra=extra)
            message = f"the workflow cannot start: {type(exc).__name__}: {exc}"
            state, children, final, result = {}, [], FAILED, _errors_result(message, chain)
    state, final, result = _bounded(state, final, result, chain)
    if _has_secret_inputs(execution, action):
        state = _sealed(runtime, state)
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


def _started(
    runtime: Runtime, execution: Execution, action: Any, kv: KeyValueLookup
) -> tuple[dict, list[NewExecution], str | None, Any]:
    problems = content_errors(action.workflow, _action_inputs(runtime))
    if problems:
        # As StackStorm: checked before anything runs, every problem reported.
        return {}, [], FAILED, {"errors": problems, "output": None}
    parameters = runtime.sealer.unseal(execution.parameters or {})
    _, inputs = action.prepare_parameters(parameters)
    conductor, requests = WorkflowConductor.start(
        action.workflow,
        inputs,
        runtime_context={"st2": _st2_context(runtime, execution, action)},
        st2kv=kv,
        parameter_kinds=_parameter_kinds(runtime),
    )
    children = [_child(execution, request) for request in requests]
    final, result = _end_of(conductor, active=0, requested=len(children))
    return conductor.state, children, final, result


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
        state = runtime.sealer.unseal_value(state[SEALED_STATE])
    return state


def _rerun_started(
    runtime: Runtime, execution: Execution, action: Any, kv: KeyValueLookup, state: dict
) -> tuple[dict, list[NewExecution], str | None, Any]:
    """A re-run from tasks (engine.workflows.rerun): the original's state continued by
    this execution, its tasks' results kept, the named tasks requested again."""
    if action.runner_type == ACTION_CHAIN:
        raise ActionError("re-running from tasks is only supported for Orquesta workflows")
    options = execution.context["re-run"]
    reset = options.get("reset") if isinstance(options.get("reset"), list) else []
    conductor = WorkflowConductor(
        action.workflow, state, st2kv=kv, parameter_kinds=_parameter_kinds(runtime)
    )
    contexts = conductor.state["contexts"]
    contexts[0] = {**contexts[0], "st2": _st2_context(runtime, execution, action)}
    requests = rerun(conductor, _rerun_tasks(execution), reset)
    children = [_child(execution, request) for request in requests]
    final, result = _end_of(conductor, active=0, requested=len(children))
    return conductor.state, children, final, result


def _action_inputs(runtime: Runtime) -> Callable[[str], ActionInputs | None]:
    """What each registered action takes, for the content check at start."""

    def inputs(ref: str) -> ActionInputs | None:
        if not runtime.action_known(ref):
            return None
        specs = runtime.packs.action(ref).parameter_specs
        required = tuple(n for n, p in specs.items() if p.required and not p.has_default)
        return ActionInputs(names=frozenset(specs), required=required)

    return inputs


def _parameter_kinds(runtime: Runtime) -> Callable[[str], Mapping[str, str]]:
    """An action's parameters that are shell commands or URLs (an unknown action: none;
    running it fails anyway)."""

    def kinds(ref: str) -> Mapping[str, str]:
        if not runtime.action_known(ref):
            return {}
        return kinds_for_runner(runtime.packs.action(ref).runner_type)

    return kinds


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


async def _st2kv(runtime: Runtime, execution: Execution) -> KeyValueLookup:
    """st2kv('system.x') / st2kv('user.x') for the workflow's user, read from the
    datastore's loaded copy before the conductor runs (it does no I/O itself)."""
    user = (execution.context or {}).get("user")
    user = user if isinstance(user, str) and user else RULE_USER
    system, own = await runtime.datastore.st2kv_snapshot(user)
    scopes = {
        "system": {name: (value, secret) for name, value, secret in system},
        "user": {name: (value, secret) for name, value, secret in own},
    }

    def lookup(key: str, decrypt: bool) -> Any:
        scope, _, name = key.partition(".")
        if scope not in scopes or not name:
            # As StackStorm (st2common.util.keyvalue): only "system." names the system
            # scope; any other key is the workflow user's own.
            scope, name = "user", key
        value, secret = scopes[scope][name]  # KeyError: no such key
        return runtime.datastore.decrypt(value) if secret and decrypt else value

    return lookup


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
            kv = await (chains.load_st2kv if chain else _st2kv)(runtime, workflow)
        except StoreError as exc:
            log.error("loading the datastore for %s failed: %s", workflow.id, exc)
            return  # the lease expires and the step is taken again
        try:
            state, children, final, result = await asyncio.to_thread(
                _chain_stepped if chain else _stepped, runtime, step, kv
            )
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


def _chain_stepped(
    runtime: Runtime, step: WorkflowStep, kv: Any
) -> tuple[dict, list[NewExecution], Any, Any]:
    """A chain's step (engine.workers.chains), its state bounded and sealed as a
    workflow's is."""
    sealed = SEALED_STATE in step.state
    if sealed:
        state = runtime.sealer.unseal_value(step.state[SEALED_STATE])
        step = dataclasses.replace(step, state=state)
    new_state, children, final, result = chains.stepped(runtime, step, kv)
    new_state, final, result = _bounded(new_state, final, result, chain=True)
    return _sealed(runtime, new_state) if sealed else new_state, children, final, result


def _stepped(
    runtime: Runtime, step: WorkflowStep, kv: KeyValueLookup
) -> tuple[dict, list[NewExecution], Any, Any]:
    workflow = step.workflow
    action = runtime.packs.action(workflow.action)
    if action.workflow is None:
        raise ActionError(action.broken or f"action {action.ref!r} is not a workflow")
    sealed = SEALED_STATE in step.state
    state = runtime.sealer.unseal_value(step.state[SEALED_STATE]) if sealed else step.state
    conductor = WorkflowConductor(
        action.workflow, state, st2kv=kv, parameter_kinds=_parameter_kinds(runtime)
    )
    requests: list[ActionRequest] = []
    answered = False
    if workflow.status == CANCELING and conductor.status not in (*COMPLETED, CANCELING):
        conductor.cancel()  # no new task starts; it ends once its running ones have
    elif workflow.status == PAUSING and conductor.status == RUNNING:
        conductor.pause()  # no new task starts; paused once its running ones have ended
    elif workflow.status == RESUMING and conductor.status in (PAUSING, PAUSED):
        requests.extend(conductor.resume())
    elif conductor.state.get(PAUSED_BY_INQUIRY) and not step.asking and conductor.status in HELD:
        # Paused for an inquiry that was answered while that pause was being decided
        # (the answer found the workflow still running, so did not resume it).
        requests.extend(conductor.resume())
        answered = True
    if conductor.status == RUNNING:
        conductor.state.pop(PAUSED_BY_INQUIRY, None)
        if step.asking and workflow.status in (RUNNING, RESUMING):
            # StackStorm (Orquesta): a task pending an answer pauses its workflow; running
            # tasks finish, no new one starts, and an answer resumes it.
            conductor.pause()
            conductor.state[PAUSED_BY_INQUIRY] = True
    for child in step.finished:
        task = (child.context or {}).get("orquesta") or {}
        requests.extend(
            conductor.task_finished(
                task.get("task_name", ""),
                task.get("route", 0),
                child.status,
                child.result,
                task.get("item_id"),
            )
        )
    children = [_child(workflow, request) for request in requests]
    final, result = _end_of(conductor, active=step.active, requested=len(children))
    if final is None:
        final = settled_status(step, conductor.status, len(children), answered)
    new_state, final, result = _bounded(conductor.state, final, result)
    return _sealed(runtime, new_state) if sealed else new_state, children, final, result


def _has_secret_inputs(execution: Execution, action: Any) -> bool:
    given = execution.parameters or {}
    return any(given.get(name) is not None for name in action.secret_parameters)


def _sealed(runtime: Runtime, state: dict) -> dict:
    """A state holding secret inputs, sealed at rest as the inputs themselves are."""
    return {SEALED_STATE: runtime.sealer.seal_value(state)}


def _end_of(conductor: WorkflowConductor, *, active: int, requested: int) -> tuple[Any, Any]:
    """(final status, result) once the conductor has ended and no task runs any more."""
    if conductor.status not in COMPLETED or active or requested:
        return None, None
    return conductor.status, conductor.result()


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
