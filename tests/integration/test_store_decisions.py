"""record_decisions: several instances' decisions in one transaction, each on its own."""

from __future__ import annotations

import pytest

from engine.errors import LeaseLost, NotFound, StoreError
from engine.model.records import (
    ENFORCEMENT_SUCCEEDED,
    PROCESSED,
    PROCESSING,
    PROCESSING_FAILED,
    REQUESTED,
    EnforcementOutcome,
    InstanceDecision,
    NewExecution,
    NewTriggerInstance,
)
from engine.store import Store, UnstorableValue


def instance(n: int) -> NewTriggerInstance:
    return NewTriggerInstance(trigger="core.st2.webhook", payload={"n": n})


def matched(rule_ref: str, **fields) -> EnforcementOutcome:
    return EnforcementOutcome(rule_ref=rule_ref, status=ENFORCEMENT_SUCCEEDED, **fields)


async def claim(store: Store, count: int):
    items = [instance(n) for n in range(count)]
    await store.add_trigger_instances(items)
    claimed = {c.id: c for c in await store.claim_trigger_instances(count, 30)}
    return [claimed[item.id] for item in items]


async def test_decisions_are_recorded_together_with_their_executions_and_traces(
    store: Store,
) -> None:
    first, second = await claim(store, 2)
    run = matched("p.run", execution=NewExecution("core.local", {"cmd": "x"}))
    traces = [{"rule": "p.run", "matched": True}]
    results = await store.record_decisions(
        [
            InstanceDecision(first.id, first.lease_token, [run], PROCESSED, traces),
            InstanceDecision(second.id, second.lease_token, [], PROCESSING_FAILED),
        ]
    )
    assert results == [[run.id], []]
    assert (await store.get_trigger_instance(first.id)).status == PROCESSED
    assert (await store.get_trigger_instance(second.id)).status == PROCESSING_FAILED
    assert (await store.get_execution(run.execution.id)).status == REQUESTED
    assert await store.get_rule_evaluations(first.id) == traces
    assert await store.get_rule_evaluations(second.id) is None


async def test_a_stale_lease_refuses_only_its_own_decision(store: Store) -> None:
    first, stale, third = await claim(store, 3)
    outcomes = [matched(f"p.r{n}", execution=NewExecution("core.noop", {})) for n in range(3)]
    missing = "f" * 24
    results = await store.record_decisions(
        [
            InstanceDecision(first.id, first.lease_token, [outcomes[0]], PROCESSED),
            InstanceDecision(stale.id, "not-the-token", [outcomes[1]], PROCESSED, []),
            InstanceDecision(missing, "token", [], PROCESSED),
            InstanceDecision(third.id, third.lease_token, [outcomes[2]], PROCESSED),
        ]
    )
    assert results[0] == [outcomes[0].id] and results[3] == [outcomes[2].id]
    assert isinstance(results[1], LeaseLost)
    assert isinstance(results[2], NotFound)
    # Nothing of the refused decision was written: still processing, no enforcement,
    # no execution, no trace.
    assert (await store.get_trigger_instance(stale.id)).status == PROCESSING
    assert (await store.list_enforcements({"trigger_instance": stale.id}, 10, 0)).total == 0
    with pytest.raises(NotFound):
        await store.get_execution(outcomes[1].execution.id)
    assert await store.get_rule_evaluations(stale.id) is None
    assert (await store.get_trigger_instance(third.id)).status == PROCESSED


async def test_an_unstorable_trace_refuses_only_its_own_decision(store: Store) -> None:
    bad, good = await claim(store, 2)
    results = await store.record_decisions(
        [
            InstanceDecision(bad.id, bad.lease_token, [], PROCESSED, [{"x": float("nan")}]),
            InstanceDecision(good.id, good.lease_token, [], PROCESSED),
        ]
    )
    assert isinstance(results[0], UnstorableValue) and results[1] == []
    assert (await store.get_trigger_instance(bad.id)).status == PROCESSING
    assert (await store.get_trigger_instance(good.id)).status == PROCESSED


async def test_a_bad_final_status_is_refused_before_anything_is_written(store: Store) -> None:
    (item,) = await claim(store, 1)
    with pytest.raises(StoreError):
        await store.record_decisions([InstanceDecision(item.id, item.lease_token, [], "pending")])
    assert (await store.get_trigger_instance(item.id)).status == PROCESSING


@pytest.mark.parametrize("key", ["", "deploy-42"])
async def test_once_per_holds_within_a_chunk_even_for_an_empty_key(store: Store, key) -> None:
    """Two decisions in one chunk with the same once_per key: the rule fires once (the
    empty string is a key like any other, not "no once_per")."""
    first, second = await claim(store, 2)
    a = matched("p.once", once_per_key=key, execution=NewExecution("core.noop", {}))
    b = matched("p.once", once_per_key=key, execution=NewExecution("core.noop", {}))
    results = await store.record_decisions(
        [
            InstanceDecision(first.id, first.lease_token, [a], PROCESSED),
            InstanceDecision(second.id, second.lease_token, [b], PROCESSED),
        ]
    )
    assert results == [[a.id], []]
    assert (await store.list_enforcements({"rule_ref": "p.once"}, 10, 0)).total == 1
    assert (await store.list_executions({}, 10, 0)).total == 1
