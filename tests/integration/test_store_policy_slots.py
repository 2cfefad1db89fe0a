"""Concurrency slots of action policies in the store (engine.store.ops.policies), on
SQLite and PostgreSQL: atomic taking, freeing with the execution's end (a killed worker's
included), delayed executions requested again, and two stores racing on one database."""

from __future__ import annotations

import asyncio

import pytest

from engine.errors import LeaseLost
from engine.model.records import NewExecution
from engine.store import Store

ACTION = "p.limited"


async def _claimed(store: Store, count: int, lease: float = 30) -> list:
    for _ in range(count):
        await store.create_execution(NewExecution(action=ACTION, parameters={}))
    claimed = await store.claim_executions(count, lease, 2)
    assert len(claimed) == count
    return claimed


async def test_slots_are_taken_up_to_the_threshold_and_free_with_the_end(store: Store) -> None:
    first, second, third = await _claimed(store, 3)
    slots = [("p.limit", 2)]
    assert await store.take_policy_slots(first.id, first.lease_token, slots) is None
    assert await store.take_policy_slots(second.id, second.lease_token, slots) is None
    # Full: the third is refused, whatever the order of the keys asked.
    assert await store.take_policy_slots(third.id, third.lease_token, slots) == "p.limit"
    # Taking again (a re-claimed execution) does not count itself.
    assert await store.take_policy_slots(first.id, first.lease_token, slots) is None
    await store.start_execution(first.id, first.lease_token)
    await store.finish_execution(first.id, first.lease_token, "succeeded", {})
    assert await store.take_policy_slots(third.id, third.lease_token, slots) is None


async def test_all_slots_or_none(store: Store) -> None:
    first, second = await _claimed(store, 2)
    assert await store.take_policy_slots(first.id, first.lease_token, [("b", 1)]) is None
    # "a" has room, "b" does not: neither is taken.
    refused = await store.take_policy_slots(second.id, second.lease_token, [("a", 1), ("b", 1)])
    assert refused == "b"
    third = (await _claimed(store, 1))[0]
    assert await store.take_policy_slots(third.id, third.lease_token, [("a", 1)]) is None


async def test_a_stale_lease_cannot_take_a_slot(store: Store) -> None:
    (execution,) = await _claimed(store, 1)
    with pytest.raises(LeaseLost):
        await store.take_policy_slots(execution.id, "not-the-token", [("k", 5)])


async def test_delayed_executions_wait_without_a_lease_and_are_requested_again(
    store: Store,
) -> None:
    holder, waiter = await _claimed(store, 2)
    assert await store.take_policy_slots(holder.id, holder.lease_token, [("k", 1)]) is None
    assert await store.take_policy_slots(waiter.id, waiter.lease_token, [("k", 1)]) == "k"
    delayed = await store.delay_execution(waiter.id, waiter.lease_token)
    assert delayed.status == "delayed" and delayed.lease_token is None
    assert [entry["status"] for entry in delayed.log][-1] == "delayed"
    assert await store.claim_executions(10, 30, 2) == []  # not claimable while delayed
    assert await store.requeue_delayed("other.action", 10) == 0
    assert await store.requeue_delayed(ACTION, 10, waited_seconds=3600) == 0  # too recent
    assert await store.requeue_delayed(ACTION, 10) == 1
    (again,) = await store.claim_executions(10, 30, 2)
    assert again.id == waiter.id and again.status == "scheduled"
    # A delayed execution can be canceled like a requested one.
    assert await store.take_policy_slots(again.id, again.lease_token, [("k", 1)]) == "k"
    await store.delay_execution(again.id, again.lease_token)
    canceled, previous = await store.request_cancel(again.id)
    assert previous == "delayed" and canceled.status == "canceled"


async def test_a_killed_workers_slot_frees_when_its_execution_is_abandoned(
    store: Store,
) -> None:
    (dead,) = await _claimed(store, 1, lease=0.2)
    assert await store.take_policy_slots(dead.id, dead.lease_token, [("k", 1)]) is None
    await store.start_execution(dead.id, dead.lease_token)
    # Its worker is gone (kill -9): no heartbeat, no finish. Another is refused meanwhile.
    (other,) = await _claimed(store, 1)
    assert await store.take_policy_slots(other.id, other.lease_token, [("k", 1)]) == "k"
    await store.delay_execution(other.id, other.lease_token)
    await asyncio.sleep(0.4)
    # The next claim abandons the dead run (one attempt allowed): its slot is free.
    assert await store.claim_executions(10, 30, 1) == []
    assert (await store.get_execution(dead.id)).status == "abandoned"
    assert await store.requeue_delayed(ACTION, 10) == 1
    (again,) = await store.claim_executions(10, 30, 1)
    assert await store.take_policy_slots(again.id, again.lease_token, [("k", 1)]) is None


@pytest.mark.parametrize("threshold", [1, 3])
async def test_two_stores_racing_never_exceed_the_threshold(
    open_store, store: Store, threshold: int
) -> None:
    """Two stores (two processes' worth of connections) take slots of one key at once."""
    other = await open_store()
    stores = [store, other]
    for _ in range(24):
        await store.create_execution(NewExecution(action=ACTION, parameters={}))
    claimed = []
    for index in range(6):
        claimed.extend(await stores[index % 2].claim_executions(4, 30, 2))
    assert len(claimed) == 24

    async def take(index: int, execution) -> bool:
        owner = stores[index % 2]
        return (
            await owner.take_policy_slots(
                execution.id, execution.lease_token, [("race", threshold)]
            )
            is None
        )

    taken = await asyncio.gather(*(take(i, e) for i, e in enumerate(claimed)))
    assert sum(taken) == threshold


async def test_a_retry_is_settled_once_with_its_execution(open_store, store: Store) -> None:
    (original,) = await _claimed(store, 1)
    await store.mark_retry_pending(original.id)
    await store.mark_retry_pending(original.id)  # a second mark (attempt 2) changes nothing
    assert await store.pending_retries(10, 0) == []  # not ended yet
    await store.start_execution(original.id, original.lease_token)
    await store.finish_execution(original.id, original.lease_token, "failed", {})
    (pending,) = await store.pending_retries(10, 0)
    assert pending.id == original.id and pending.status == "failed"
    assert await store.pending_retries(10, 3600) == []  # marked too recently

    other = await open_store()
    retries = [
        NewExecution(action=ACTION, parameters={"n": i}, context={"try": i}) for i in range(6)
    ]
    # The worker and sweepers of two processes race: one retry is created.
    settlers = [store, other] * 3
    settled = await asyncio.gather(
        *(s.settle_retry(original.id, new) for s, new in zip(settlers, retries, strict=True))
    )
    assert sum(settled) == 1
    created = [new for new, won in zip(retries, settled, strict=True) if won]
    page = await store.list_executions({"action": ACTION}, 100, 0)
    ids = {execution.id for execution in page.items}
    assert ids == {original.id, created[0].id}
    assert await store.pending_retries(10, 0) == []
    assert await store.settle_retry(original.id, None) is False


async def test_a_retry_settled_with_none_creates_nothing(store: Store) -> None:
    (original,) = await _claimed(store, 1)
    await store.mark_retry_pending(original.id)
    await store.start_execution(original.id, original.lease_token)
    await store.finish_execution(original.id, original.lease_token, "succeeded", {})
    assert await store.settle_retry(original.id, None) is True
    assert await store.pending_retries(10, 0) == []
    assert len((await store.list_executions({"action": ACTION}, 100, 0)).items) == 1
    # Never marked: nothing to settle.
    assert await store.settle_retry("unknown-id", None) is False
