"""The rules worker: claim pending trigger instances, decide, record — one transaction per chunk.

Claims carry a lease; a worker killed mid-batch leaves instances whose lease expires and
another worker re-claims them. Recording checks each instance's lease token, so a late
finisher cannot write twice, and a stale instance does not hold back the rest of its chunk.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from engine.errors import Conflict, LeaseLost, StoreError
from engine.model import (
    ENFORCEMENT_FAILED,
    PROCESSED,
    PROCESSING_FAILED,
    EnforcementOutcome,
    InstanceDecision,
    TriggerInstance,
)
from engine.rules.enforce import RULE_USER, decide
from engine.rules.explain import traces_to_keep
from engine.runtime import Runtime
from engine.store import UnstorableValue
from engine.workers import sleep_until

log = logging.getLogger(__name__)

# Instances decided and recorded per store transaction. One per instance cost a writer
# round trip each; 8 already saves most of that (server CPU per webhook -20% in
# bench_ingest), while 32 made each transaction hold SQLite's one writer long enough to
# delay the webhooks' group commits behind it (ingest -30%, p50 x1.5).
RECORD_CHUNK = 8


async def run_rules_worker(runtime: Runtime, stop: asyncio.Event) -> None:
    settings = runtime.settings.workers
    store = runtime.store
    log.info("rules worker started")
    while not stop.is_set():
        try:
            batch = await store.claim_trigger_instances(
                settings.rules_batch, settings.lease_seconds
            )
            claimed_at = time.monotonic()
        except StoreError as exc:
            log.error("rules worker cannot claim trigger instances: %s", exc)
            await sleep_until(stop, asyncio.sleep(settings.poll_interval))
            continue
        if not batch:
            await sleep_until(
                stop, store.wait_for_work("trigger_instances", settings.poll_interval)
            )
            continue
        for start in range(0, len(batch), RECORD_CHUNK):
            if stop.is_set():
                await _release(runtime, batch[start:])
                break
            began = time.monotonic()
            await process_instances(runtime, batch[start : start + RECORD_CHUNK])
            pressure = runtime.ingest_pressure
            # Pauses never take the batch past half its lease (it would be re-claimed).
            if pressure.busy() and time.monotonic() - claimed_at < settings.lease_seconds / 2:
                await pressure.yield_to_ingest(time.monotonic() - began, await _backlog(runtime))
    log.info("rules worker stopped")


async def _backlog(runtime: Runtime) -> int:
    try:
        return await runtime.store.pending_backlog()
    except StoreError:
        return 0  # unknown: yield as if it were empty; ingest sheds on its own reading


async def process_instance(runtime: Runtime, instance: TriggerInstance) -> None:
    await process_instances(runtime, [instance])


async def process_instances(runtime: Runtime, instances: list[TriggerInstance]) -> None:
    """Decide each instance, then record all decisions in one store transaction."""
    try:
        # st2kv for the rule user: loaded once and shared by a batch (engine.datastore).
        kv = await runtime.datastore.st2kv(RULE_USER)
    except StoreError as exc:
        # Unprocessed, their leases expire and they are claimed again: nothing is lost.
        log.error("loading the datastore for %d instance(s) failed: %s", len(instances), exc)
        return
    decided = [_decide(runtime, instance, kv) for instance in instances]
    try:
        results = await runtime.store.record_decisions([decision for decision, _ in decided])
    except StoreError as exc:
        # The leases will expire and the instances are processed again: nothing is lost.
        log.error("recording the decisions on %d instance(s) failed: %s", len(instances), exc)
        return
    poisoned = []
    for instance, (decision, evaluations), result in zip(instances, decided, results, strict=True):
        if isinstance(result, UnstorableValue | Conflict):
            poisoned.append((instance, _refused_decision(decision, result)))
            continue
        _report(runtime, instance, decision, evaluations, result)
    if poisoned:
        await _record_refused(runtime, poisoned)


def _refused_decision(decision: InstanceDecision, error: StoreError) -> InstanceDecision:
    """What to record when the store refuses a decision for its content (NaN, a NUL...).

    Retrying cannot help — the same payload decides the same way — so instead of leaving
    the instance to be re-claimed for ever, every enforcement is recorded as failed with the
    reason, without executions or traces (they may hold the unstorable value), and the
    instance ends processing_failed: visible in the API and in explain.
    """
    reason = f"the decision could not be stored: {error}"
    outcomes = [
        EnforcementOutcome(
            rule_ref=outcome.rule_ref,
            status=ENFORCEMENT_FAILED,
            failure_reason=reason,
            rule_id=outcome.rule_id,
        )
        for outcome in decision.outcomes
    ]
    return InstanceDecision(
        decision.instance_id, decision.lease_token, outcomes, PROCESSING_FAILED, None
    )


async def _record_refused(
    runtime: Runtime, refused: list[tuple[TriggerInstance, InstanceDecision]]
) -> None:
    try:
        results = await runtime.store.record_decisions([decision for _, decision in refused])
    except StoreError as exc:
        log.error("recording %d refused decision(s) failed: %s", len(refused), exc)
        return
    for (instance, decision), result in zip(refused, results, strict=True):
        log.error(
            "trigger instance %s: its decision could not be stored; marked processing_failed",
            instance.id,
            extra={"trigger_instance": instance.id, "trigger": instance.trigger},
        )
        _report(runtime, instance, decision, [], result)


def _decide(runtime: Runtime, instance: TriggerInstance, kv) -> tuple[InstanceDecision, list]:
    extra = {"trigger_instance": instance.id, "trigger": instance.trigger}
    max_claims = runtime.settings.workers.rules_max_claims
    if instance.claims > max_claims:
        # Claimed that often without a recorded decision: every worker that took it died
        # before recording (a rule that crashes or hangs the process). Evaluating it again
        # would only do that again; it ends here, failed, for an operator to look at.
        log.error(
            "trigger instance %s was claimed %d times without a decision being recorded "
            "(workers.rules_max_claims = %d): not evaluated again; marked processing_failed",
            instance.id,
            instance.claims - 1,
            max_claims,
            extra=extra,
        )
        return InstanceDecision(
            instance.id, instance.lease_token or "", [], PROCESSING_FAILED, None
        ), []
    try:
        outcomes, evaluations = decide(
            runtime.ruleset,
            instance,
            kv=kv,
            action_known=runtime.action_known,
            parameter_kinds=runtime.parameter_kinds,
        )
        status = PROCESSED
    except Exception:  # a bug in evaluation must not lose the instance
        log.exception("evaluating trigger instance %s failed", instance.id, extra=extra)
        outcomes, evaluations, status = [], [], PROCESSING_FAILED
    explain = runtime.settings.explain
    traces = traces_to_keep(
        evaluations,
        outcomes,
        failed=status == PROCESSING_FAILED,
        sampled=random.random() < explain.sample_rate,
        max_candidates=explain.max_candidates,
    )
    decision = InstanceDecision(instance.id, instance.lease_token or "", outcomes, status, traces)
    return decision, evaluations


def _report(
    runtime: Runtime,
    instance: TriggerInstance,
    decision: InstanceDecision,
    evaluations: list,
    result: list[str] | StoreError,
) -> None:
    extra = {"trigger_instance": instance.id, "trigger": instance.trigger}
    if isinstance(result, LeaseLost):
        log.warning(
            "trigger instance %s was re-claimed by another worker; result dropped",
            instance.id,
            extra=extra,
        )
    elif isinstance(result, StoreError):
        # The lease will expire and the instance is processed again: nothing is lost.
        log.error("recording enforcements of %s failed: %s", instance.id, result, extra=extra)
    else:
        runtime.observe("rules_evaluated", decision.final_status, evaluations)
        for outcome in decision.outcomes:
            log.info(
                "rule %s enforced on %s: %s%s",
                outcome.rule_ref,
                instance.id,
                outcome.status,
                f" ({outcome.failure_reason})" if outcome.failure_reason else "",
                extra={**extra, "rule": outcome.rule_ref},
            )


async def _release(runtime: Runtime, instances: list[TriggerInstance]) -> None:
    try:
        await runtime.store.release_trigger_instances(
            {i.id: i.lease_token or "" for i in instances}
        )
    except StoreError as exc:
        log.warning(
            "could not release %d claimed instance(s): %s (their lease will expire)",
            len(instances),
            exc,
        )
