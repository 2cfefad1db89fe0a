"""The store contract for workflow runs, on SQLite and PostgreSQL (see conftest.py):
started with their first children in one transaction, stepped once per ended child under
a lease and a version, ended, canceled down the tree."""

from __future__ import annotations

import asyncio

import pytest

from engine.errors import Conflict, LeaseLost, NotFound
from engine.model.records import (
    CANCELED,
    CANCELING,
    FAILED,
    REQUESTED,
    RUNNING,
    SUCCEEDED,
    Execution,
    NewExecution,
)
from engine.store import Store

STATE = {"version": 1, "tasks": ["t1"]}


async def claimed_workflow(store: Store, parent: str | None = None) -> Execution:
    new = NewExecution("examples.flow", {"name": "x"}, {"user": "stanley"}, parent=parent)
    await store.create_execution(new)
    [claimed] = [e for e in await store.claim_executions(10, 30) if e.id == new.id]
    return claimed


def child(workflow: Execution, task: str) -> NewExecution:
    return NewExecution("core.noop", {}, {"orquesta": {"task_name": task}}, parent=workflow.id)


_CLAIMED: dict[str, Execution] = {}


async def run_child(store: Store, child_id: str, status: str = SUCCEEDED) -> Execution:
    # Claims take every requested child at once; the ones not run yet are kept for later.
    _CLAIMED.update((e.id, e) for e in await store.claim_executions(10, 30))
    claimed = _CLAIMED.pop(child_id)
    await store.start_execution(claimed.id, claimed.lease_token or "")
    return await store.finish_execution(claimed.id, claimed.lease_token or "", status, {"ok": 1})


async def test_start_runs_the_workflow_and_requests_its_first_children(store: Store) -> None:
    workflow = await claimed_workflow(store)
    first = child(workflow, "t1")
    started = await store.start_workflow(workflow.id, workflow.lease_token or "", STATE, [first])
    assert (started.status, started.lease_token, started.lease_expires_at) == (RUNNING, None, None)
    stored_child = await store.get_execution(first.id)
    assert (stored_child.status, stored_child.parent) == (REQUESTED, workflow.id)
    # Nothing ended yet: no step is due, and the actions claim never takes the workflow.
    assert await store.claim_workflow_steps(10, 30) == []
    assert [e.id for e in await store.claim_executions(10, 30)] == [first.id]
    with pytest.raises(LeaseLost):
        await store.start_workflow(workflow.id, workflow.lease_token or "", STATE, [])


async def test_a_started_workflow_is_listed_with_its_children(store: Store) -> None:
    workflow = await claimed_workflow(store)
    first, second = child(workflow, "a"), child(workflow, "b")
    await store.start_workflow(workflow.id, workflow.lease_token or "", STATE, [first, second])
    page = await store.list_executions({"parent": workflow.id}, 10, 0)
    assert sorted(e.id for e in page.items) == sorted([first.id, second.id])
    assert page.total == 2
    top = await store.list_executions({"parent": "null"}, 10, 0)
    assert [e.id for e in top.items] == [workflow.id]


async def test_a_child_ending_makes_one_step_that_applies_it_once(store: Store) -> None:
    workflow = await claimed_workflow(store)
    first = child(workflow, "t1")
    await store.start_workflow(workflow.id, workflow.lease_token or "", STATE, [first])
    await run_child(store, first.id)

    [step] = await store.claim_workflow_steps(10, 30)
    assert (step.workflow.id, step.state, step.version) == (workflow.id, STATE, 1)
    assert [e.id for e in step.finished] == [first.id] and step.active == 0
    assert await store.claim_workflow_steps(10, 30) == []  # leased

    second = child(workflow, "t2")
    new_state = {"version": 1, "tasks": ["t1", "t2"]}
    after = await store.apply_workflow_step(step, new_state, [first.id], [second])
    assert after.status == RUNNING
    assert (await store.get_execution(second.id)).parent == workflow.id
    # Applied and released: no step is due until `second` ends, and a replay is refused.
    assert await store.claim_workflow_steps(10, 30) == []
    with pytest.raises(LeaseLost):
        await store.apply_workflow_step(step, new_state, [first.id], [child(workflow, "t2")])

    await run_child(store, second.id, FAILED)
    [step2] = await store.claim_workflow_steps(10, 30)
    assert step2.version == 2 and step2.state == new_state
    assert [e.id for e in step2.finished] == [second.id]
    result = {"errors": [{"type": "error"}], "output": None}
    ended = await store.apply_workflow_step(step2, new_state, [second.id], [], FAILED, result)
    assert (ended.status, ended.result) == (FAILED, result)
    assert ended.finished_at is not None
    assert await store.claim_workflow_steps(10, 30) == []


async def test_a_child_ending_during_a_step_keeps_the_run_due(store: Store) -> None:
    workflow = await claimed_workflow(store)
    first, second = child(workflow, "a"), child(workflow, "b")
    await store.start_workflow(workflow.id, workflow.lease_token or "", STATE, [first, second])
    await run_child(store, first.id)
    [step] = await store.claim_workflow_steps(10, 30)
    assert step.active == 1
    await run_child(store, second.id)  # ends while the step is being decided
    await store.apply_workflow_step(step, STATE, [first.id], [])
    [again] = await store.claim_workflow_steps(10, 30)
    assert [e.id for e in again.finished] == [second.id]


async def test_an_expired_step_lease_is_claimed_again_and_the_old_one_fenced(
    store: Store,
) -> None:
    workflow = await claimed_workflow(store)
    first = child(workflow, "t1")
    await store.start_workflow(workflow.id, workflow.lease_token or "", STATE, [first])
    await run_child(store, first.id)
    [lost] = await store.claim_workflow_steps(10, 0.05)
    await asyncio.sleep(0.2)
    [step] = await store.claim_workflow_steps(10, 30)
    assert step.lease_token != lost.lease_token and step.version == lost.version
    with pytest.raises(LeaseLost):
        await store.apply_workflow_step(lost, STATE, [first.id], [])
    await store.apply_workflow_step(step, STATE, [first.id], [], SUCCEEDED, {"output": None})
    assert (await store.get_execution(workflow.id)).status == SUCCEEDED


async def test_a_workflow_failing_at_start_ends_in_the_same_transaction(store: Store) -> None:
    workflow = await claimed_workflow(store)
    result = {"errors": [{"message": "bad input"}], "output": None}
    ended = await store.start_workflow(
        workflow.id, workflow.lease_token or "", STATE, [], FAILED, result
    )
    assert (ended.status, ended.result) == (FAILED, result)
    assert [entry["status"] for entry in ended.log][-2:] == [RUNNING, FAILED]


async def test_a_subworkflow_ending_makes_its_parent_due(store: Store) -> None:
    parent = await claimed_workflow(store)
    sub_request = NewExecution("examples.sub", {}, {}, parent=parent.id)
    await store.start_workflow(parent.id, parent.lease_token or "", STATE, [sub_request])
    [sub] = [e for e in await store.claim_executions(10, 30) if e.id == sub_request.id]
    await store.start_workflow(sub.id, sub.lease_token or "", STATE, [])
    # The subworkflow's own step ends it: its parent's run becomes due.
    leaf = child(sub, "t1")
    [sub_claim] = await store.claim_workflow_steps(10, 30) or [None]
    assert sub_claim is None
    await store.create_execution(leaf)
    await run_child(store, leaf.id)
    [sub_step] = await store.claim_workflow_steps(10, 30)
    assert sub_step.workflow.id == sub.id
    await store.apply_workflow_step(sub_step, STATE, [leaf.id], [], SUCCEEDED, {"output": 1})
    [parent_step] = await store.claim_workflow_steps(10, 30)
    assert parent_step.workflow.id == parent.id
    assert [(e.id, e.result) for e in parent_step.finished] == [(sub.id, {"output": 1})]


async def test_cancel_cascades_to_the_children_and_the_workflow_ends_by_a_step(
    store: Store,
) -> None:
    workflow = await claimed_workflow(store)
    waiting, busy = child(workflow, "a"), child(workflow, "b")
    await store.start_workflow(workflow.id, workflow.lease_token or "", STATE, [waiting, busy])
    claimed = {e.id: e for e in await store.claim_executions(10, 30)}
    await store.start_execution(busy.id, claimed[busy.id].lease_token or "")
    # `waiting` stays scheduled: canceled at once; `busy` runs: canceling until it stops.
    canceled, previous = await store.request_cancel(workflow.id)
    assert (canceled.status, previous) == (CANCELING, RUNNING)
    assert (await store.get_execution(waiting.id)).status == CANCELED
    assert (await store.get_execution(busy.id)).status == CANCELING
    [step] = await store.claim_workflow_steps(10, 30)
    assert [e.id for e in step.finished] == [waiting.id] and step.active == 1
    await store.apply_workflow_step(step, STATE, [waiting.id], [])
    assert await store.claim_workflow_steps(10, 30) == []
    await store.finish_execution(busy.id, claimed[busy.id].lease_token or "", CANCELED, {})
    [last] = await store.claim_workflow_steps(10, 30)
    assert last.workflow.status == CANCELING and last.active == 0
    ended = await store.apply_workflow_step(last, STATE, [busy.id], [], CANCELED, {"output": None})
    assert ended.status == CANCELED


async def test_pause_and_resume_move_the_workflow_and_its_subworkflows(store: Store) -> None:
    parent = await claimed_workflow(store)
    sub_request = NewExecution("examples.sub", {}, {}, parent=parent.id)
    task = child(parent, "t1")
    await store.start_workflow(parent.id, parent.lease_token or "", STATE, [sub_request, task])
    claimed = {e.id: e for e in await store.claim_executions(10, 30)}
    sub = claimed[sub_request.id]
    await store.start_workflow(sub.id, sub.lease_token or "", STATE, [])

    paused, previous = await store.request_pause(parent.id)
    assert (paused.status, previous) == ("pausing", RUNNING)
    assert (await store.get_execution(sub.id)).status == "pausing"
    # A task run that is not a workflow runs on; pausing twice is refused.
    assert (await store.get_execution(task.id)).status == "scheduled"
    with pytest.raises(Conflict, match="cannot be paused"):
        await store.request_pause(parent.id)
    with pytest.raises(NotFound):
        await store.request_pause(task.id)

    # Both runs are due (their conductors learn of the pause); the subworkflow has no
    # task running, so its step settles the pause; the parent's waits for its task.
    steps = {step.workflow.id: step for step in await store.claim_workflow_steps(10, 30)}
    assert set(steps) == {parent.id, sub.id}
    assert steps[parent.id].active == 2 and steps[sub.id].active == 0
    settled = await store.apply_workflow_step(steps[sub.id], STATE, [], [], "paused")
    assert settled.status == "paused" and settled.finished_at is None
    still = await store.apply_workflow_step(steps[parent.id], STATE, [], [])
    assert still.status == "pausing"
    assert await store.claim_workflow_steps(10, 30) == []

    resumed, previous = await store.request_resume(parent.id)
    assert (resumed.status, previous) == ("resuming", "pausing")
    assert (await store.get_execution(sub.id)).status == "resuming"
    steps = {step.workflow.id: step for step in await store.claim_workflow_steps(10, 30)}
    assert set(steps) == {parent.id, sub.id}
    back = await store.apply_workflow_step(steps[sub.id], STATE, [], [], "running")
    assert back.status == RUNNING

    canceled, previous = await store.request_cancel(parent.id)
    assert (canceled.status, previous) == (CANCELING, "resuming")
    assert (await store.get_execution(task.id)).status == CANCELED
    assert (await store.get_execution(sub.id)).status == CANCELING
