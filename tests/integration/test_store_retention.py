"""Retention purges on SQLite and PostgreSQL (see conftest.py): finished records older than
a cutoff go in batches with what belongs to them; work still to be done stays.

A cutoff in the future stands for "older than the retention": every record made by the
test is older than it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine.errors import NotFound, StoreError
from engine.model.records import (
    ENFORCEMENT_SUCCEEDED,
    PENDING,
    PROCESSED,
    PROCESSING_FAILED,
    SUCCEEDED,
    EnforcementOutcome,
    InstanceDecision,
    NewExecution,
    NewTriggerInstance,
    utcnow,
)
from engine.outbound.delivery import AttemptResult
from engine.outbound.subscriptions import Secret, Subscription
from engine.store import Store

LATER = timedelta(hours=1)


async def decided(store: Store, count: int, status: str = PROCESSED, **fields):
    """`count` trigger instances decided with `status`, each with a rule's enforcement,
    its requested execution and an explain trace."""
    items = [NewTriggerInstance("core.st2.webhook", {"n": n}, **fields) for n in range(count)]
    await store.add_trigger_instances(items)
    claimed = {c.id: c for c in await store.claim_trigger_instances(count, 30)}
    outcomes = [
        EnforcementOutcome("p.r", ENFORCEMENT_SUCCEEDED, execution=NewExecution("core.noop", {}))
        for _ in items
    ]
    await store.record_decisions(
        [
            InstanceDecision(i.id, claimed[i.id].lease_token, [o], status, [{"rule": "p.r"}])
            for i, o in zip(items, outcomes, strict=True)
        ]
    )
    return items, outcomes


async def test_finished_instances_go_with_their_enforcements_and_traces(store: Store) -> None:
    [done], [outcome] = await decided(store, 1)
    [failed], _ = await decided(store, 1, PROCESSING_FAILED)
    waiting = NewTriggerInstance("core.st2.webhook", {"waiting": True})
    await store.add_trigger_instance(waiting)
    cutoff = utcnow() + LATER

    assert await store.purge("trigger_instances", cutoff, limit=100, dry_run=True) == 2
    assert await store.get_trigger_instance(done.id)  # a dry run deletes nothing
    assert await store.purge("trigger_instances", cutoff, limit=100) == 2

    for gone in (done, failed):
        with pytest.raises(NotFound):
            await store.get_trigger_instance(gone.id)
    assert await store.get_rule_evaluations(done.id) is None
    assert (await store.list_enforcements({"trigger_instance": done.id}, 10, 0)).total == 0
    # The execution it requested is not the instance's: it has its own retention.
    assert (await store.get_execution(outcome.execution.id)).status == "requested"
    assert (await store.get_trigger_instance(waiting.id)).status == PENDING
    # Nothing older than a cutoff in the past.
    assert await store.purge("trigger_instances", utcnow() - LATER, limit=100) == 0


async def test_batches_are_bounded_and_a_dedupe_key_is_kept_for_its_window(store: Store):
    await decided(store, 5)
    [keyed], _ = await decided(store, 1, dedupe_key="hook:delivery-1")
    cutoff, window = utcnow() + LATER, utcnow() - LATER
    counts = [
        await store.purge("trigger_instances", cutoff, limit=2, dedupe_before=window)
        for _ in range(4)
    ]
    assert counts == [2, 2, 1, 0]
    assert (await store.get_trigger_instance(keyed.id)).dedupe_key == "hook:delivery-1"
    # Past the dedupe window too: gone.
    assert await store.purge("trigger_instances", cutoff, limit=2, dedupe_before=cutoff) == 1


async def test_executions_go_by_whole_ended_trees(store: Store) -> None:
    [instance], [outcome] = await decided(store, 1)
    root = outcome.execution
    [claimed] = [e for e in await store.claim_executions(10, 30) if e.id == root.id]
    children = [
        NewExecution("core.noop", {}, {"orquesta": {"task_name": f"t{n}"}}, parent=root.id)
        for n in range(2)
    ]
    await store.start_workflow(root.id, claimed.lease_token or "", {"tasks": []}, children)
    ran = {}
    for execution in await store.claim_executions(10, 30):
        await store.start_execution(execution.id, execution.lease_token or "")
        ran[execution.id] = execution
    first = ran[children[0].id]
    await store.finish_execution(first.id, first.lease_token or "", SUCCEEDED, {})
    cutoff = utcnow() + LATER
    # The workflow and one task are still running: nothing of the tree goes.
    assert await store.purge("executions", cutoff, limit=100) == 0

    second = ran[children[1].id]
    await store.finish_execution(second.id, second.lease_token or "", SUCCEEDED, {})
    # The workflow's step sees both tasks ended and ends it.
    [step] = await store.claim_workflow_steps(10, 30)
    applied = [first.id, second.id]
    ended = await store.apply_workflow_step(step, {"tasks": []}, applied, [], SUCCEEDED, {})
    assert ended.status == SUCCEEDED

    assert await store.purge("executions", cutoff, limit=100, dry_run=True) == 3
    assert await store.purge("executions", cutoff, limit=100) == 3
    for gone in (root.id, *(c.id for c in children)):
        with pytest.raises(NotFound):
            await store.get_execution(gone)
    assert await store.claim_workflow_steps(10, 30) == []
    # The enforcement stays with its instance, without the execution.
    enforcements = await store.list_enforcements({"trigger_instance": instance.id}, 5, 0)
    assert [e.execution_id for e in enforcements.items] == [None]


async def test_an_unended_execution_is_never_purged(store: Store) -> None:
    _, [outcome] = await decided(store, 1)
    cutoff = utcnow() + LATER
    assert await store.purge("executions", cutoff, limit=100) == 0  # requested
    [claimed] = await store.claim_executions(1, 30)
    await store.start_execution(claimed.id, claimed.lease_token or "")
    assert await store.purge("executions", cutoff, limit=100) == 0  # running
    await store.finish_execution(claimed.id, claimed.lease_token or "", SUCCEEDED, {})
    assert await store.purge("executions", utcnow() - LATER, limit=100) == 0  # too young
    assert await store.purge("executions", cutoff, limit=100) == 1
    with pytest.raises(NotFound):
        await store.get_execution(outcome.execution.id)


async def test_ended_deliveries_go_with_their_event(store: Store) -> None:
    await store.create_subscription(
        Subscription(
            id="s",
            url="http://127.0.0.1:9/s",
            custom_headers={},
            events=("trigger_instance.created",),
            secrets=(Secret("whsec_c2VjcmV0"),),
        )
    )
    await store.add_trigger_instances([NewTriggerInstance("t", {"n": n}) for n in range(2)])
    first, second = await store.claim_deliveries(10, 30.0, 10, {})
    result = AttemptResult(utcnow(), 204, None, 1.0, "")
    await store.complete_delivery(
        first.delivery.id, first.delivery.lease_token or "", result, None, 0
    )
    cutoff = utcnow() + LATER
    # The other is still being delivered: it stays.
    assert await store.purge("deliveries", cutoff, limit=100) == 1
    with pytest.raises(NotFound):
        await store.get_delivery(first.delivery.id)
    assert (await store.get_delivery(second.delivery.id)).status == "delivering"


async def test_once_per_keys_and_unknown_kinds(store: Store) -> None:
    await store.add_trigger_instance(NewTriggerInstance("t", {"id": 7}))
    [claimed] = await store.claim_trigger_instances(1, 30)
    outcome = EnforcementOutcome("p.once", ENFORCEMENT_SUCCEEDED, once_per_key="7")
    await store.record_decisions(
        [InstanceDecision(claimed.id, claimed.lease_token, [outcome], PROCESSED)]
    )
    assert await store.purge("once_per_keys", utcnow() - LATER, limit=10) == 0
    assert await store.purge("once_per_keys", utcnow() + LATER, limit=10) == 1
    with pytest.raises(StoreError, match="unknown kind 'rules' to purge"):
        await store.purge("rules", utcnow(), limit=10)
