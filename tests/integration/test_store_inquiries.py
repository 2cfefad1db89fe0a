"""The store contract for inquiries, on SQLite and PostgreSQL (see conftest.py): opened by
a running ask (its lease ends, its workflow's run becomes due), listed while pending,
answered once, timed out past its ttl — each answer resuming the paused workflows
above it in the same transaction."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine.errors import Conflict, LeaseLost, NotFound
from engine.model.records import (
    INQUIRY_PENDING,
    SUCCEEDED,
    TIMEOUT,
    Execution,
    NewExecution,
    utcnow,
)
from engine.store import Store

ASKED = {"schema": {"type": "object"}, "roles": [], "users": [], "route": "", "ttl": 60}


async def running(store: Store, new: NewExecution, requested: bool = False) -> Execution:
    """`new` claimed and running (created first unless a workflow `requested` it)."""
    if not requested:
        await store.create_execution(new)
    [claimed] = [e for e in await store.claim_executions(10, 30) if e.id == new.id]
    await store.start_execution(claimed.id, claimed.lease_token or "")
    return claimed


async def workflow_with_ask(store: Store) -> tuple[Execution, Execution]:
    """A started workflow whose one task is a running core.ask."""
    flow = NewExecution("examples.flow", {}, {"user": "stanley"})
    await store.create_execution(flow)
    [claimed] = [e for e in await store.claim_executions(10, 30) if e.id == flow.id]
    ask = NewExecution("core.ask", {}, {"orquesta": {"task_name": "ask"}}, parent=flow.id)
    await store.start_workflow(flow.id, claimed.lease_token or "", {"v": 1}, [ask])
    return claimed, await running(store, ask, requested=True)


async def test_an_open_inquiry_is_pending_listed_and_its_workflow_due(store: Store) -> None:
    flow, ask = await workflow_with_ask(store)
    opened = await store.open_inquiry(ask.id, ask.lease_token or "", ASKED)
    assert (opened.status, opened.result, opened.lease_token) == (INQUIRY_PENDING, ASKED, None)
    page = await store.list_inquiries(10, 0)
    assert ([e.id for e in page.items], page.total) == ([ask.id], 1)
    assert (await store.get_inquiry(ask.id)).status == INQUIRY_PENDING
    # The workflow's step sees its one active task waiting.
    [step] = await store.claim_workflow_steps(10, 30)
    assert (step.workflow.id, step.active, step.waiting, step.finished) == (flow.id, 1, 1, ())
    # No worker claims a pending execution.
    assert ask.id not in [e.id for e in await store.claim_executions(10, 30)]
    # A second open (a late worker) is refused by the lease.
    with pytest.raises(LeaseLost):
        await store.open_inquiry(ask.id, ask.lease_token or "", ASKED)


async def test_only_an_inquiry_is_one(store: Store) -> None:
    plain = await running(store, NewExecution("core.noop", {}, {}))
    with pytest.raises(NotFound):
        await store.get_inquiry(plain.id)
    with pytest.raises(NotFound):
        await store.get_inquiry("nope")
    with pytest.raises(NotFound):
        await store.respond_inquiry(plain.id, {"response": {}}, "alice")


async def test_an_answer_ends_it_once_and_resumes_the_paused_workflow(store: Store) -> None:
    flow, ask = await workflow_with_ask(store)
    await store.open_inquiry(ask.id, ask.lease_token or "", ASKED)
    [step] = await store.claim_workflow_steps(10, 30)
    paused = await store.apply_workflow_step(step, {"v": 2}, [], [], "paused")
    assert paused.status == "paused"

    answered = await store.respond_inquiry(ask.id, {**ASKED, "response": {"ok": 1}}, "alice")
    assert (answered.status, answered.result["response"]) == (SUCCEEDED, {"ok": 1})
    assert (await store.get_execution(flow.id)).status == "resuming"
    [step] = await store.claim_workflow_steps(10, 30)
    assert [child.id for child in step.finished] == [ask.id]
    assert (await store.list_inquiries(10, 0)).total == 0
    with pytest.raises(Conflict) as raised:
        await store.respond_inquiry(ask.id, {**ASKED, "response": {"ok": 2}}, "bob")
    assert "already been responded to" in str(raised.value)
    assert (await store.get_execution(ask.id)).result["response"] == {"ok": 1}


async def test_an_answer_resumes_every_paused_workflow_up_the_tree(store: Store) -> None:
    outer = NewExecution("examples.outer", {}, {})
    await store.create_execution(outer)
    [claimed] = [e for e in await store.claim_executions(10, 30) if e.id == outer.id]
    inner = NewExecution("examples.flow", {}, {}, parent=outer.id)
    await store.start_workflow(outer.id, claimed.lease_token or "", {"v": 1}, [inner])
    inner_claimed = next(e for e in await store.claim_executions(10, 30) if e.id == inner.id)
    ask = NewExecution("core.ask", {}, {}, parent=inner.id)
    await store.start_workflow(inner.id, inner_claimed.lease_token or "", {"v": 1}, [ask])
    ask_running = await running(store, ask, requested=True)
    await store.open_inquiry(ask.id, ask_running.lease_token or "", ASKED)
    # The inner workflow pauses; that makes the outer's run due, whose step pauses it too.
    [inner_step] = await store.claim_workflow_steps(10, 30)
    assert inner_step.workflow.id == inner.id
    await store.apply_workflow_step(inner_step, {"v": 2}, [], [], "paused")
    [outer_step] = await store.claim_workflow_steps(10, 30)
    assert (outer_step.workflow.id, outer_step.active, outer_step.waiting) == (outer.id, 1, 1)
    await store.apply_workflow_step(outer_step, {"v": 2}, [], [], "paused")

    await store.respond_inquiry(ask.id, {**ASKED, "response": {}}, None)
    assert (await store.get_execution(inner.id)).status == "resuming"
    assert (await store.get_execution(outer.id)).status == "resuming"


async def test_an_expired_inquiry_times_out_keeping_its_result(store: Store) -> None:
    _, ask = await workflow_with_ask(store)
    await store.open_inquiry(ask.id, ask.lease_token or "", {**ASKED, "ttl": 0})
    never = await running(store, NewExecution("core.ask", {}, {}))
    await store.open_inquiry(never.id, never.lease_token or "", {**ASKED, "ttl": 0})
    soon = await running(store, NewExecution("core.ask", {}, {}))
    await store.open_inquiry(soon.id, soon.lease_token or "", {**ASKED, "ttl": 1})
    assert await store.expire_inquiries() == []  # a ttl of 0 never expires; 1 minute is ahead

    expired = await store.expire_inquiries(utcnow() + timedelta(minutes=2))
    assert [e.id for e in expired] == [soon.id]
    timed_out = await store.get_execution(soon.id)
    assert (timed_out.status, timed_out.result) == (TIMEOUT, {**ASKED, "ttl": 1})
    with pytest.raises(Conflict) as raised:
        await store.respond_inquiry(soon.id, {"response": {}}, "alice")
    assert "timed out" in str(raised.value)
    assert {e.id for e in (await store.list_inquiries(10, 0)).items} == {ask.id, never.id}


async def test_canceling_a_pending_inquiry_ends_it_at_once(store: Store) -> None:
    _, ask = await workflow_with_ask(store)
    await store.open_inquiry(ask.id, ask.lease_token or "", ASKED)
    canceled, previous = await store.request_cancel(ask.id)
    assert (canceled.status, previous) == ("canceled", INQUIRY_PENDING)
    assert (await store.list_inquiries(10, 0)).total == 0
    [step] = await store.claim_workflow_steps(10, 30)
    assert [child.id for child in step.finished] == [ask.id]
