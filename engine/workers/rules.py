"""The rules worker: claim pending trigger instances, decide, record — one transaction each.

Claims carry a lease; a worker killed mid-batch leaves instances whose lease expires and
another worker re-claims them. record_enforcements checks the lease token, so a late
finisher cannot write twice.
"""

from __future__ import annotations

import asyncio
import logging
import random

from engine.errors import LeaseLost, StoreError
from engine.model import PROCESSED, PROCESSING_FAILED, TriggerInstance
from engine.rules.enforce import RULE_USER, decide
from engine.rules.explain import traces_to_keep
from engine.runtime import Runtime
from engine.workers import sleep_until

log = logging.getLogger(__name__)


async def run_rules_worker(runtime: Runtime, stop: asyncio.Event) -> None:
    settings = runtime.settings.workers
    store = runtime.store
    log.info("rules worker started")
    while not stop.is_set():
        try:
            batch = await store.claim_trigger_instances(
                settings.rules_batch, settings.lease_seconds
            )
        except StoreError as exc:
            log.error("rules worker cannot claim trigger instances: %s", exc)
            await sleep_until(stop, asyncio.sleep(settings.poll_interval))
            continue
        if not batch:
            await sleep_until(
                stop, store.wait_for_work("trigger_instances", settings.poll_interval)
            )
            continue
        for index, instance in enumerate(batch):
            if stop.is_set():
                await _release(runtime, batch[index:])
                break
            await process_instance(runtime, instance)
    log.info("rules worker stopped")


async def process_instance(runtime: Runtime, instance: TriggerInstance) -> None:
    extra = {"trigger_instance": instance.id, "trigger": instance.trigger}
    try:
        # st2kv for the rule user: loaded once and shared by a batch (engine.datastore).
        kv = await runtime.datastore.st2kv(RULE_USER)
    except StoreError as exc:
        # Unprocessed, its lease expires and it is claimed again: nothing is lost.
        log.error("loading the datastore for %s failed: %s", instance.id, exc, extra=extra)
        return
    try:
        outcomes, evaluations = decide(
            runtime.ruleset,
            instance,
            kv=kv,
            action_known=runtime.action_known,
            shell_parameters=runtime.shell_parameters,
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
    try:
        await runtime.store.record_enforcements(
            instance.id, instance.lease_token or "", outcomes, status, traces
        )
    except LeaseLost:
        log.warning(
            "trigger instance %s was re-claimed by another worker; result dropped",
            instance.id,
            extra=extra,
        )
    except StoreError as exc:
        # The lease will expire and the instance is processed again: nothing is lost.
        log.error("recording enforcements of %s failed: %s", instance.id, exc, extra=extra)
    else:
        runtime.observe("rules_evaluated", status, evaluations)
        for outcome in outcomes:
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
