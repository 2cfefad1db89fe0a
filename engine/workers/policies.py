"""Action policies enforced where executions run (engine.workers.actions calls these).

- `admit`, before a claimed execution starts: its retry marked pending when an
  ``action.retry`` policy applies (engine.store.ops.policy_retries); its ``action.concurrency`` /
  ``action.concurrency.attr`` slots are taken in one store transaction
  (engine.store.ops.policies), or it is `delayed` (StackStorm's status; requested again
  when a slot frees) or `canceled`, as the policy says.
- `after_finish`, once an execution's end is recorded: an ``action.retry`` policy re-runs
  it as a new execution (``context.policies.retry``, engine.packs.policy_decisions), and
  the delayed executions of its action get their turn.
- `sweep`, beside the actions worker: delayed executions are requested again
  every few seconds, so one whose wake-up was lost (its releaser killed between two
  transactions, a workflow that ended elsewhere) still runs; and retries left pending (the
  worker killed after recording the end, a workflow that ended elsewhere) are settled.

What the policies decide is pure (engine.packs.policy_decisions); this module only reads
the runtime and calls the store.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from engine.errors import ActionError, LeaseLost, StoreError
from engine.model.records import CANCELED, DELAYED, Execution, NewExecution
from engine.packs.policy_decisions import CANCEL, concurrency_slots, retry_after
from engine.packs.policy_types import CONCURRENCY, CONCURRENCY_BY_ATTR, RETRY
from engine.process.runtime import Runtime
from engine.workers import sleep_until

log = logging.getLogger(__name__)

# How often delayed executions are requested again without a wake-up, and how many at once.
SWEEP_SECONDS = 3.0
SWEEP_BATCH = 200
# Delayed executions woken when one execution of their action ends (by attribute, the one
# woken may wait for another value: wake a few).
WAKE_ON_FINISH = 1
WAKE_ON_FINISH_BY_ATTR = 20


@dataclass(frozen=True)
class Admission:
    """`run`: start the execution now. `finish`: (status, result) to record instead."""

    run: bool
    finish: tuple[str, Any] | None = None


RUN = Admission(run=True)
HELD = Admission(run=False)


async def admit(runtime: Runtime, execution: Execution) -> Admission:
    """Take the execution's concurrency slots, or delay or cancel it (see module doc)."""
    policies = runtime.packs.action_policies(execution.action)
    if not policies:
        return RUN
    if not execution.parent and any(p.policy_type == RETRY for p in policies):
        try:
            # Pending before it runs: if its end is recorded but this worker dies before
            # the retry is, the sweep still makes it.
            await runtime.store.mark_retry_pending(execution.id)
        except StoreError as exc:
            log.error("recording the retry policy of %s failed: %s", execution.id, exc)
            return HELD  # its lease expires and it is claimed again
    try:
        parameters = runtime.sealer.unseal(execution.parameters or {})
    except ActionError:
        return RUN  # preparing it fails next, with this reason
    slots = concurrency_slots(policies, parameters)
    if not slots:
        return RUN
    token = execution.lease_token or ""
    extra = {"execution": execution.id, "action": execution.action}
    try:
        full = await runtime.store.take_policy_slots(
            execution.id, token, [(slot.key, slot.threshold) for slot in slots]
        )
        if full is None:
            return RUN
        slot = next(s for s in slots if s.key == full)
        if slot.on_full == CANCEL:
            log.info("execution %s canceled by policy %s", execution.id, slot.policy, extra=extra)
            return Admission(run=False, finish=(CANCELED, _canceled_result(execution, slot)))
        await runtime.store.delay_execution(execution.id, token)
    except LeaseLost:
        log.warning("execution %s was re-claimed before its policies applied", execution.id)
        return HELD
    except StoreError as exc:
        # Its lease expires and it is claimed again: nothing ran, nothing is counted.
        log.error("applying the policies of %s failed: %s", execution.id, exc, extra=extra)
        return HELD
    log.info("execution %s delayed by policy %s", execution.id, slot.policy, extra=extra)
    return HELD


def _canceled_result(execution: Execution, slot: Any) -> dict[str, str]:
    return {
        "message": f"Action canceled by policy {slot.policy}: its threshold of "
        f"{slot.threshold} scheduled or running execution(s) of {execution.action} is reached."
    }


async def after_finish(runtime: Runtime, finished: Execution) -> None:
    """Retry the execution if a retry policy says so; wake delayed ones of its action."""
    policies = runtime.packs.action_policies(finished.action)
    if not policies:
        return
    try:
        await _retry(runtime, finished, policies)
        types = {p.policy_type for p in policies}
        by_attr = CONCURRENCY_BY_ATTR in types
        if by_attr or CONCURRENCY in types:
            await runtime.store.requeue_delayed(
                finished.action, WAKE_ON_FINISH_BY_ATTR if by_attr else WAKE_ON_FINISH
            )
    except StoreError as exc:
        log.error("applying the policies after %s ended failed: %s", finished.id, exc)


async def _retry(runtime: Runtime, finished: Execution, policies: list[Any]) -> None:
    if not finished.parent and any(p.policy_type == RETRY for p in policies):
        await _settle_retry(runtime, finished, policies)


async def _settle_retry(runtime: Runtime, finished: Execution, policies: list[Any]) -> None:
    """Settle the execution's pending retry: create the re-run its policy asks for, or
    none (a policy gone since, by a reload, asks for none). Settling is conditional in the
    store, so the sweep racing the worker creates no twin."""
    retry = retry_after(policies, finished.id, finished.status, finished.context, finished.parent)
    new = None
    if retry is not None:
        try:
            # Stored sealed; the new execution is sealed again when it is written.
            parameters = runtime.sealer.unseal(finished.parameters or {})
        except ActionError as exc:
            log.error("cannot retry %s: %s", finished.id, exc)
            parameters = None
        if parameters is not None:
            new = NewExecution(
                action=finished.action,
                parameters=parameters,
                context=retry.context,
                delay=retry.delay,
            )
    if await runtime.store.settle_retry(finished.id, new) and new is not None:
        log.info(
            "execution %s %s; policy %s retries it as %s (retry %d)",
            finished.id,
            finished.status,
            retry.policy,
            new.id,
            retry.context["policies"]["retry"]["retry_count"],
            extra={"execution": new.id, "action": finished.action},
        )


async def sweep(runtime: Runtime, stop: asyncio.Event) -> None:
    """Every SWEEP_SECONDS until `stop`: request delayed executions again, settle the
    retries left pending."""
    while not stop.is_set():
        await sleep_until(stop, asyncio.sleep(SWEEP_SECONDS))
        if stop.is_set():
            return
        try:
            # A read first: most sweeps find nothing, and a write would take SQLite's writer.
            waiting = await runtime.store.list_executions({"status": DELAYED}, 1, 0)
            if waiting.items:
                await runtime.store.requeue_delayed(None, SWEEP_BATCH, SWEEP_SECONDS)
            for ended in await runtime.store.pending_retries(SWEEP_BATCH, SWEEP_SECONDS):
                # Its worker stopped before settling it, or it ended outside the actions
                # worker (a workflow): decided here as its worker would have.
                await _settle_retry(runtime, ended, runtime.packs.action_policies(ended.action))
        except StoreError as exc:
            log.warning("sweeping delayed executions and pending retries failed: %s", exc)
