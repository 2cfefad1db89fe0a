"""The rules worker: claim pending trigger instances, decide, record — one transaction per chunk.

Claims carry a lease; a worker killed mid-batch leaves instances whose lease expires and
another worker re-claims them. Recording checks each instance's lease token, so a late
finisher cannot write twice, and a stale instance does not hold back the rest of its chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from engine.errors import Conflict, EvaluatorUnavailable, LeaseLost, StoreError
from engine.model.records import (
    ENFORCEMENT_FAILED,
    PROCESSING_FAILED,
    EnforcementOutcome,
    InstanceDecision,
    TriggerInstance,
)
from engine.process.runtime import Runtime
from engine.rules.enforce import RULE_USER
from engine.store import UnstorableValue
from engine.workers import sleep_until
from engine.workers.evaluator import EvaluatorPool, RulesInput

log = logging.getLogger(__name__)

# Instances decided and recorded per store transaction. One per instance cost a writer
# round trip each; 8 already saves most of that (server CPU per webhook -20% in
# bench_ingest), while 32 made each transaction hold SQLite's one writer long enough to
# delay the webhooks' group commits behind it (ingest -30%, p50 x1.5).
RECORD_CHUNK = 8
# Instances sent to the evaluator process at a time: each round trip costs the loop a
# send, a wake-up and a reply (32 took the parent's CPU per instance from 45 to 34 µs
# against 8 in a local measurement); the budget is per instance whatever the chunk.
EVAL_CHUNK = 32


async def run_rules_worker(runtime: Runtime, stop: asyncio.Event) -> None:
    settings = runtime.settings.workers
    store = runtime.store
    # Rules are evaluated in child processes, never on this loop (engine.workers.evaluator);
    # the app starts them with the process (engine.http.app), else they are started here.
    evaluator = runtime.evaluator
    owned = evaluator is None
    if evaluator is None:
        evaluator = runtime.evaluator = EvaluatorPool(runtime.settings)
        await evaluator.start()
    log.info("rules worker started", extra={"evaluator_pids": evaluator.pids})
    try:
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
            await _work_off(runtime, evaluator, batch, claimed_at, stop)
    finally:
        if owned:
            runtime.evaluator = None
            await evaluator.close()
    log.info("rules worker stopped")


async def _work_off(
    runtime: Runtime,
    evaluator: EvaluatorPool,
    batch: list[TriggerInstance],
    claimed_at: float,
    stop: asyncio.Event,
) -> None:
    """Decide a claimed batch EVAL_CHUNK instances at a time, and record the decisions
    RECORD_CHUNK at a time; the evaluator decides the next chunk while one is recorded."""
    settings = runtime.settings.workers
    chunks = [batch[start : start + EVAL_CHUNK] for start in range(0, len(batch), EVAL_CHUNK)]
    deciding = asyncio.ensure_future(_decide_chunk(runtime, evaluator, chunks[0]))
    for index, chunk in enumerate(chunks):
        try:
            decided = await deciding
        except BaseException:
            await _release(runtime, [i for c in chunks[index:] for i in c])
            raise
        rest = [i for c in chunks[index + 1 :] for i in c]
        if rest and not stop.is_set():
            deciding = asyncio.ensure_future(_decide_chunk(runtime, evaluator, chunks[index + 1]))
        for start in range(0, len(chunk) if decided is not None else 0, RECORD_CHUNK):
            began = time.monotonic()
            part = slice(start, start + RECORD_CHUNK)
            await _record(runtime, chunk[part], decided[part])
            pressure = runtime.ingest_pressure
            # Pauses never take the batch past half its lease (it would be re-claimed).
            if (
                not stop.is_set()
                and pressure.busy()
                and time.monotonic() - claimed_at < settings.lease_seconds / 2
            ):
                await pressure.yield_to_ingest(time.monotonic() - began, await _backlog(runtime))
        if stop.is_set():
            if rest:
                if not deciding.done():
                    deciding.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await deciding
                await _release(runtime, rest)
            return


async def _backlog(runtime: Runtime) -> int:
    try:
        return await runtime.store.pending_backlog()
    except StoreError:
        return 0  # unknown: yield as if it were empty; ingest sheds on its own reading


async def process_instances(
    runtime: Runtime, evaluator: EvaluatorPool, instances: list[TriggerInstance]
) -> None:
    """Decide each instance, then record all decisions in one store transaction."""
    decided = await _decide_chunk(runtime, evaluator, instances)
    if decided is not None:
        await _record(runtime, instances, decided)


Decided = list[tuple[InstanceDecision, list[str]]]


async def _decide_chunk(
    runtime: Runtime, evaluator: EvaluatorPool, instances: list[TriggerInstance]
) -> Decided | None:
    """(decision, matched rule refs) per instance, or None when they could not be decided
    now (they are released, or their leases expire: nothing is lost)."""
    try:
        # st2kv for the rule user: loaded once and shared by a batch (engine.store.datastore).
        kv = await runtime.datastore.st2kv_snapshot(RULE_USER)
    except StoreError as exc:
        # Unprocessed, their leases expire and they are claimed again: nothing is lost.
        log.error("loading the datastore for %d instance(s) failed: %s", len(instances), exc)
        return None
    max_claims = runtime.settings.workers.rules_max_claims
    fresh = [instance for instance in instances if instance.claims <= max_claims]
    try:
        verdicts = iter(await evaluator.decide(fresh, kv, RulesInput(runtime)) if fresh else [])
    except EvaluatorUnavailable as exc:
        log.error("%d trigger instance(s) not decided now: %s", len(instances), exc)
        await _release(runtime, instances)
        return None
    decided = []
    for instance in instances:
        if instance.claims > max_claims:
            decided.append((_overclaimed(runtime, instance), []))
            continue
        verdict = next(verdicts)
        decision = InstanceDecision(
            instance.id,
            instance.lease_token or "",
            verdict.outcomes,
            verdict.status,
            verdict.traces,
        )
        decided.append((decision, verdict.matched))
    return decided


async def _record(runtime: Runtime, instances: list[TriggerInstance], decided: Decided) -> None:
    try:
        results = await runtime.store.record_decisions([decision for decision, _ in decided])
    except StoreError as exc:
        # The leases will expire and the instances are processed again: nothing is lost.
        log.error("recording the decisions on %d instance(s) failed: %s", len(instances), exc)
        return
    poisoned = []
    for instance, (decision, matched), result in zip(instances, decided, results, strict=True):
        if isinstance(result, UnstorableValue | Conflict):
            poisoned.append((instance, _refused_decision(decision, result)))
            continue
        _report(runtime, instance, decision, matched, result)
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


def _overclaimed(runtime: Runtime, instance: TriggerInstance) -> InstanceDecision:
    # Claimed that often without a recorded decision: every worker that took it died
    # before recording (a rule that crashes or hangs the process). Evaluating it again
    # would only do that again; it ends here, failed, for an operator to look at.
    log.error(
        "trigger instance %s was claimed %d times without a decision being recorded "
        "(workers.rules_max_claims = %d): not evaluated again; marked processing_failed",
        instance.id,
        instance.claims - 1,
        runtime.settings.workers.rules_max_claims,
        extra={"trigger_instance": instance.id, "trigger": instance.trigger},
    )
    return InstanceDecision(instance.id, instance.lease_token or "", [], PROCESSING_FAILED, None)


def _report(
    runtime: Runtime,
    instance: TriggerInstance,
    decision: InstanceDecision,
    matched: list[str],
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
        runtime.observe("rules_evaluated", decision.final_status, matched)
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
