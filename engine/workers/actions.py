"""The actions worker: claim requested executions, run them with their runner, record.

Each execution is claimed with a lease that a heartbeat extends while it runs; the final
status is written with the lease token, so a worker that lost its lease cannot overwrite
the new owner's result. A worker killed mid-run leaves a running execution whose lease
expires: it is claimed again as attempt 2, or marked abandoned for `retry: never` actions.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Any

from engine.errors import ActionError, EngineError, LeaseLost, StoreError
from engine.model.generic_triggers import INQUIRY_TRIGGER, inquiry_instance
from engine.model.records import (
    ABANDONED,
    CANCELED,
    CANCELING,
    FAILED,
    INQUIRY_PENDING,
    Execution,
)
from engine.packs.action import WORKFLOW_RUNNERS
from engine.packs.config import render_config
from engine.packs.pack import Pack
from engine.process.runtime import Runtime
from engine.rules import templates
from engine.rules.enforce import RULE_USER
from engine.rules.parameter_kinds import kinds_for_runner, render_parameter
from engine.runners.base import RunRequest
from engine.runners.pack_virtualenv import pack_interpreter
from engine.workers import policies, sleep_until
from engine.workers.action_datastore import action_datastore
from engine.workers.dispatch import dispatcher
from engine.workers.generic_triggers import generic_source
from engine.workers.leftovers import ActionProcesses
from engine.workers.live_output import LiveOutput
from engine.workers.workflows import start_workflow

log = logging.getLogger(__name__)

# Observed event (engine.process.runtime observers) carrying an execution id: a cancel was
# requested through this process's API. Workers in other processes learn it from the
# `canceling` status their next heartbeat returns.
CANCEL_REQUESTED = "execution_cancel_requested"
CANCELED_BY_USER = {"message": "Action canceled by user."}
# Executions of instant actions claimed (and so started and finished together) at once.
INSTANT_BATCH = 256


async def run_actions_worker(runtime: Runtime, stop: asyncio.Event) -> None:
    settings = runtime.settings.workers
    store = runtime.store
    running: set[asyncio.Task] = set()
    # Executions of instant actions (their runner finishes at once, in the engine:
    # core.noop) hold no process slot: they are claimed by the batch beside the others.
    instant_running: set[asyncio.Task] = set()
    # Execution id → its cancel signal, for the executions this worker runs now.
    cancels: dict[str, asyncio.Event] = {}

    def on_cancel_requested(event: str, *details: Any) -> None:
        if event == CANCEL_REQUESTED and details and details[0] in cancels:
            cancels[details[0]].set()

    def launch(execution: Execution, tasks: set[asyncio.Task]) -> None:
        cancel = cancels[execution.id] = asyncio.Event()
        task = asyncio.create_task(run_execution(runtime, execution, cancel, processes))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        task.add_done_callback(lambda _, key=execution.id: cancels.pop(key, None))

    async def claim(limit: int, only_actions: frozenset[str] | None) -> list[Execution]:
        try:
            return await store.claim_executions(
                limit, settings.lease_seconds, settings.max_attempts, only_actions=only_actions
            )
        except StoreError as exc:
            log.error("actions worker cannot claim executions: %s", exc)
            await sleep_until(stop, asyncio.sleep(settings.poll_interval))
            return []

    runtime.observers.append(on_cancel_requested)
    processes = ActionProcesses(store)
    # Delayed executions and pending retries of pack policies (engine.workers.policies).
    policy_sweeper = asyncio.create_task(policies.sweep(runtime, stop))
    log.info("actions worker started (concurrency %d)", settings.actions_concurrency)
    try:
        killed = await processes.sweep()
        if killed:
            log.warning("killed %d process group(s) left running by a stopped worker", killed)
        instant_of: tuple[Any, frozenset[str]] = (None, frozenset())
        # No instant execution was waiting at the last look: look again only once new work
        # is announced (or the poll interval passes), not each time a process run ends —
        # an empty claim is a transaction too.
        instant_idle = False
        while not stop.is_set():
            claimed = 0
            if instant_of[0] is not runtime.packs:  # loaded again (engine.process.reload)
                instant_of = (runtime.packs, instant_actions(runtime))
            instant = instant_of[1]
            room = INSTANT_BATCH - len(instant_running)
            if instant and room > 0 and not instant_idle:
                batch = await claim(room, instant)
                instant_idle = not batch
                for execution in batch:
                    launch(execution, instant_running)
                    claimed += 1
            free = settings.actions_concurrency - len(running)
            if free > 0:
                for execution in await claim(free, None):
                    launch(execution, running)
                    claimed += 1
            if claimed:
                continue
            # Nothing claimed: wait for new work if there is room, else for a run to end.
            waits: set[asyncio.Future] = set()
            if free <= 0:
                waits |= running
            if instant and room <= 0:
                waits |= instant_running
            hint = None
            if free > 0 or (instant and room > 0):
                hint = asyncio.ensure_future(
                    store.wait_for_work("executions", settings.poll_interval)
                )
                waits.add(hint)
            try:
                await sleep_until(stop, asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED))
            finally:
                if hint is not None:
                    instant_idle = instant_idle and not hint.done()
                    hint.cancel()
    finally:
        for tasks in (running, instant_running):
            if tasks:
                # In-flight executions finish within the role's grace period; past it they
                # are cancelled, their process groups killed and their leases left to expire.
                await asyncio.gather(*tasks, return_exceptions=True)
        policy_sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await policy_sweeper
        await processes.close()
        runtime.observers.remove(on_cancel_requested)
        log.info("actions worker stopped")


def instant_actions(runtime: Runtime) -> frozenset[str]:
    """The refs of the loaded actions whose runner is instant (engine.runners.base)."""
    runners = runtime.runners
    return frozenset(
        action.ref
        for action in runtime.packs.actions()
        if action.runner_type in runners.names()
        and getattr(runners.get(action.runner_type), "instant", False)
    )


async def run_execution(
    runtime: Runtime,
    execution: Execution,
    cancel: asyncio.Event | None = None,
    processes: ActionProcesses | None = None,
) -> None:
    """Run one claimed execution; setting `cancel` (or a `canceling` status seen by the
    heartbeat) stops the run, kills its process group and records `canceled`.

    With `processes`, the run's process groups are guarded and recorded, and a group left
    by the previous attempt on this host is killed before anything else."""
    cancel = cancel or asyncio.Event()
    extra = {"execution": execution.id, "action": execution.action, **_context_ids(execution)}
    token = execution.lease_token or ""
    store = runtime.store
    left_over_killed = (
        processes is None or execution.attempt == 1 or await processes.kill_left_over(execution)
    )
    if not left_over_killed:
        return  # its lease expires and it is claimed again, still at this attempt
    # Pack policies: run now, or delayed / canceled here (engine.workers.policies).
    admission = await policies.admit(runtime, execution)
    if admission.finish is not None:
        await _finish(runtime, execution, *admission.finish, extra)
    if not admission.run:
        return
    try:
        # st2kv for metadata templates, as the execution's user (engine.store.datastore).
        kv = await runtime.datastore.st2kv(_execution_user(execution))
    except StoreError as exc:
        log.error("loading the datastore for %s failed: %s", execution.id, exc, extra=extra)
        return  # its lease expires and it is claimed again
    if runtime.action_known(execution.action):
        workflow_action = runtime.packs.action(execution.action)
        if workflow_action.runner_type in WORKFLOW_RUNNERS:
            await start_workflow(runtime, execution, workflow_action)
            return
    try:
        request, action = prepare(runtime, execution, kv)
    except ActionError as exc:
        await _finish(runtime, execution, FAILED, {"error": str(exc)}, extra)
        return
    if execution.attempt > 1 and action.retry == "never":
        await _finish(
            runtime,
            execution,
            ABANDONED,
            {
                "error": f"the worker running attempt {execution.attempt - 1} stopped mid-run and "
                f"{action.ref} is declared retry: never"
            },
            extra,
        )
        return
    runner = runtime.runners.get(action.runner_type)
    if getattr(runner, "instant", False):
        # Nothing runs outside the engine and nothing can be cancelled midway: the start
        # and the end are written together (with other executions' in one transaction).
        result = await runner.run(request)
        await _finish(runtime, execution, result.status, result.result, extra, start_first=True)
        return
    try:
        await store.start_execution(execution.id, token)
    except LeaseLost:
        log.warning("execution %s was re-claimed before it started", execution.id, extra=extra)
        return
    log.info(
        "execution %s of %s running (attempt %d)",
        execution.id,
        action.ref,
        execution.attempt,
        extra=extra,
    )
    if processes is not None:
        request = dataclasses.replace(request, process_watch=processes.watch_for(execution))
    live = LiveOutput(
        store, execution.id, action.ref, action.runner_type, request.secret_values(), extra
    )
    request = dataclasses.replace(request, output_sink=live.write)
    run_task = asyncio.create_task(runner.run(request))
    heartbeat = asyncio.create_task(_heartbeat(runtime, execution, run_task, cancel))
    stopper = asyncio.create_task(_stop_when(cancel, run_task))
    try:
        try:
            result = await run_task
        finally:
            await live.close()  # all output stored before the end is recorded
    except asyncio.CancelledError:
        if heartbeat.done() and isinstance(heartbeat.exception(), LeaseLost):
            log.warning(
                "execution %s lost its lease while running; stopped", execution.id, extra=extra
            )
            return
        current = asyncio.current_task()
        if cancel.is_set() and not (current and current.cancelling()):
            log.info("execution %s canceled by request; stopped", execution.id, extra=extra)
            await _finish(runtime, execution, CANCELED, CANCELED_BY_USER, extra)
            return
        raise
    finally:
        for helper in (heartbeat, stopper):
            helper.cancel()
            with contextlib.suppress(asyncio.CancelledError, LeaseLost, StoreError):
                await helper
    if result.status == INQUIRY_PENDING:
        await _open_inquiry(runtime, execution, result.result, extra)
        return
    await _finish(runtime, execution, result.status, result.result, extra)


async def _open_inquiry(
    runtime: Runtime, execution: Execution, asked: Any, extra: dict[str, Any]
) -> None:
    """A `core.ask` run ends pending: its inquiry is stored, and waits for a response
    (engine.store.ops.inquiries); no worker holds it meanwhile."""
    triggers = []
    if runtime.ruleset.candidates(INQUIRY_TRIGGER):  # a rule listens (a dict lookup)
        triggers.append(inquiry_instance(execution.id, str(asked.get("route") or "")))
    try:
        await runtime.store.open_inquiry(execution.id, execution.lease_token or "", asked, triggers)
    except LeaseLost:
        log.warning("inquiry %s: another worker owns the execution now", execution.id, extra=extra)
        return
    except StoreError as exc:
        log.error("storing inquiry %s failed: %s", execution.id, exc, extra=extra)
        return
    log.info("execution %s pending: inquiry opened", execution.id, extra=extra)


def prepare(runtime: Runtime, execution: Execution, kv: Any = None) -> tuple[RunRequest, Any]:
    """Resolve the action, validate parameters and build the runner request (ActionError)."""
    action = runtime.packs.action(execution.action)
    if not action.enabled:
        raise ActionError(f"action {action.ref!r} is disabled")
    # Secret parameters are stored sealed (engine.secrets.sealing): opened only here.
    parameters = runtime.sealer.unseal(execution.parameters or {})
    runner_params, action_params = action.prepare_parameters(parameters)
    given = {name for name, value in parameters.items() if value is not None}
    if action.runner_type == "python-script":
        # As StackStorm: a Python action's run() gets every parameter it declares, None
        # for one neither given nor defaulted (run(self, cmd, hosts) with neither given).
        for name, spec in action.parameter_specs.items():
            if not spec.runner_parameter:
                action_params.setdefault(name, None)
    config = _pack_config(runtime.packs.packs[action.pack], kv)
    runner_params, action_params = _render_metadata_templates(
        action, runner_params, action_params, given, kv, config
    )
    workers = runtime.settings.workers
    timeout = runner_params.get("timeout") or action.timeout or workers.default_timeout
    request = RunRequest(
        execution_id=execution.id,
        runner_parameters=runner_params,
        action_parameters=action_params,
        entry_point=action.entry_point,
        parameter_positions=action.positions,
        secret_parameters=action.secret_parameters,
        timeout=float(timeout),
        action_config=config,
        max_output=workers.max_output,
        dispatch_trigger=dispatcher(runtime),
        datastore=action_datastore(runtime, action.pack),
        python=pack_interpreter(
            runtime.settings.resolve_path(runtime.settings.packs.virtualenvs_dir), action.pack
        ),
    )
    return request, action


def _pack_config(pack: Pack, kv: Any) -> dict[str, Any]:
    """The pack config for this execution, ``{{ st2kv... }}`` items rendered as its user."""
    if pack.config_error is not None:
        # Running without the config (or with half of it) would fail later, less clearly.
        raise ActionError(f"pack {pack.ref!r} config did not load: {pack.config_error}")
    return render_config(pack.config, pack.config_items, kv, pack.ref)


def _render_metadata_templates(
    action,
    runner_params: dict,
    action_params: dict,
    given: set[str],
    kv: Any = None,
    config: dict[str, Any] | None = None,
):
    """Action metadata may template parameters on others (core.echo: cmd "echo {{message}}").

    Only values that came from the action's own metadata (defaults) are templates. Values
    the execution was given — rendered by a rule from a payload, or sent to the API — are
    data: rendering them again would let a payload's `{{ ... }}` run as template code.
    A shell command's and a URL's inserted values are quoted (engine.rules.parameter_kinds).
    As in StackStorm, `config_context` is the action's pack config and `st2kv` the datastore.
    """
    context = {**runner_params, **action_params}

    def is_metadata_template(name: str, value: Any) -> bool:
        return name not in given and isinstance(value, str) and templates.is_template(value)

    if not any(is_metadata_template(name, value) for name, value in context.items()):
        return runner_params, action_params
    context["st2kv"] = kv  # StackStorm reserves the names: the datastore wins
    context["config_context"] = config if config is not None else {}

    kinds = kinds_for_runner(action.runner_type)

    def render(name: str, value: Any) -> Any:
        if not is_metadata_template(name, value):
            return value
        try:
            return render_parameter(kinds.get(name), value, context, name)
        except EngineError as exc:
            raise ActionError(f"parameter {name!r} did not render: {exc}") from None

    return (
        {k: render(k, v) for k, v in runner_params.items()},
        {k: render(k, v) for k, v in action_params.items()},
    )


async def _stop_when(cancel: asyncio.Event, run_task: asyncio.Task) -> None:
    await cancel.wait()
    run_task.cancel()  # runners kill the process group when cancelled


async def _heartbeat(
    runtime: Runtime, execution: Execution, run_task: asyncio.Task, cancel: asyncio.Event
) -> None:
    lease = runtime.settings.workers.lease_seconds
    loop = asyncio.get_running_loop()
    # Our own view of when the lease runs out. If heartbeats keep failing (store busy or
    # unreachable) until then, another worker may claim the execution and run attempt 2:
    # stop this run first, so the action never runs twice at once.
    lease_ends = loop.time() + lease
    while True:
        await asyncio.sleep(lease / 3)
        try:
            status = await runtime.store.heartbeat_execution(
                execution.id, execution.lease_token or "", lease
            )
            lease_ends = loop.time() + lease
            if status == CANCELING:
                cancel.set()
        except LeaseLost:
            run_task.cancel()
            raise
        except StoreError as exc:
            log.warning("heartbeat of execution %s failed: %s", execution.id, exc)
            if loop.time() + lease / 3 >= lease_ends:
                run_task.cancel()
                raise LeaseLost(
                    f"execution {execution.id}: heartbeats failed until the lease ran out"
                ) from exc


async def _finish(
    runtime: Runtime,
    execution: Execution,
    status: str,
    result: Any,
    extra: dict[str, Any],
    *,
    start_first: bool = False,
) -> None:
    try:
        finished = await runtime.store.finish_execution(
            execution.id,
            execution.lease_token or "",
            status,
            result,
            generic_source(runtime, execution),
            start_first=start_first,
        )
    except LeaseLost:
        log.warning(
            "execution %s finished but another worker owns it now; result dropped",
            execution.id,
            extra=extra,
        )
        return
    except StoreError as exc:
        log.error("recording the end of execution %s failed: %s", execution.id, exc, extra=extra)
        return
    runtime.observe("execution_finished", finished)
    log.info("execution %s %s", execution.id, status, extra=extra)
    # Retry policies, and the delayed executions of this action (engine.workers.policies).
    await policies.after_finish(runtime, finished)


def _context_ids(execution: Execution) -> dict[str, Any]:
    context = execution.context or {}
    ids = {}
    if (context.get("trigger_instance") or {}).get("id"):
        ids["trigger_instance"] = context["trigger_instance"]["id"]
    if (context.get("rule") or {}).get("ref"):
        ids["rule"] = context["rule"]["ref"]
    return ids


def _execution_user(execution: Execution) -> str:
    """Whose st2kv.user keys an execution's templates see: its context user, else the
    rule user."""
    user = (execution.context or {}).get("user")
    return user if isinstance(user, str) and user else RULE_USER
