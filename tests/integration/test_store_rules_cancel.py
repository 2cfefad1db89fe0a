"""Rules stored through the API and execution cancel, in the store contract: SQLite and
PostgreSQL (conftest.py)."""

from __future__ import annotations

import asyncio

import pytest

from engine.errors import Conflict, LeaseLost, NotFound
from engine.model.records import (
    CANCELED,
    CANCELING,
    REQUESTED,
    RUNNING,
    SCHEDULED,
    SUCCEEDED,
    NewExecution,
)
from engine.store import Store

DEFINITION = {
    "name": "on_push",
    "pack": "ci",
    "trigger": {"type": "core.st2.webhook", "parameters": {"url": "push"}},
    "criteria": {"trigger.body.ref": {"type": "equals", "pattern": "refs/heads/main"}},
    "action": {"ref": "core.noop"},
}


# --- rules -----------------------------------------------------------------------------


async def test_create_list_replace_delete_round_trip(store: Store) -> None:
    created = await store.create_rule("ci.on_push", DEFINITION)
    assert created.ref == "ci.on_push" and created.definition == DEFINITION
    assert created.created_at is not None and created.created_at == created.updated_at

    await asyncio.sleep(0.01)
    disabled = {**DEFINITION, "enabled": False}
    replaced = await store.replace_rule("ci.on_push", disabled)
    assert replaced.definition == disabled
    assert replaced.created_at == created.created_at
    assert replaced.updated_at > created.updated_at

    await store.create_rule("a.first", {**DEFINITION, "name": "first", "pack": "a"})
    listed = await store.list_rules()
    assert [r.ref for r in listed] == ["a.first", "ci.on_push"]
    assert listed[1].definition == disabled

    await store.delete_rule("ci.on_push")
    assert [r.ref for r in await store.list_rules()] == ["a.first"]


async def test_create_twice_conflicts_and_missing_refs_are_not_found(store: Store) -> None:
    await store.create_rule("ci.on_push", DEFINITION)
    with pytest.raises(Conflict, match=r"ci\.on_push"):
        await store.create_rule("ci.on_push", {**DEFINITION, "enabled": False})
    assert (await store.list_rules())[0].definition == DEFINITION  # first one kept
    with pytest.raises(NotFound, match=r"ci\.other"):
        await store.replace_rule("ci.other", DEFINITION)
    with pytest.raises(NotFound, match=r"ci\.other"):
        await store.delete_rule("ci.other")


async def test_every_rule_write_moves_the_version_and_reads_do_not(store: Store) -> None:
    start = await store.rules_version()
    await store.create_rule("ci.on_push", DEFINITION)
    after_create = await store.rules_version()
    await store.list_rules()
    assert await store.rules_version() == after_create > start
    await store.replace_rule("ci.on_push", {**DEFINITION, "enabled": False})
    after_replace = await store.rules_version()
    await store.delete_rule("ci.on_push")
    assert start < after_create < after_replace < await store.rules_version()
    # A failed write changes nothing.
    before = await store.rules_version()
    with pytest.raises(NotFound):
        await store.delete_rule("ci.on_push")
    assert await store.rules_version() == before


async def test_a_second_process_sees_rules_and_version(store: Store, open_store) -> None:
    other = await open_store()
    await store.create_rule("ci.on_push", DEFINITION)
    assert [r.ref for r in await other.list_rules()] == ["ci.on_push"]
    assert await other.rules_version() == await store.rules_version()


# --- cancel ----------------------------------------------------------------------------


async def new_execution(store: Store) -> str:
    created = await store.create_execution(
        NewExecution(action="core.local", parameters={"cmd": "true"}, context={})
    )
    return created.id


async def test_cancel_a_requested_execution_ends_it_at_once(store: Store) -> None:
    execution_id = await new_execution(store)
    execution, previous = await store.request_cancel(execution_id)
    assert (previous, execution.status) == (REQUESTED, CANCELED)
    assert execution.finished_at is not None and execution.lease_token is None
    assert [entry["status"] for entry in execution.log][-1] == CANCELED
    # Nothing left to claim.
    assert await store.claim_executions(10, 30.0) == []


async def test_cancel_a_scheduled_execution_makes_its_start_fail(store: Store) -> None:
    execution_id = await new_execution(store)
    (claimed,) = await store.claim_executions(10, 30.0)
    execution, previous = await store.request_cancel(execution_id)
    assert (previous, execution.status) == (SCHEDULED, CANCELED)
    with pytest.raises(LeaseLost):
        await store.start_execution(execution_id, claimed.lease_token)
    assert (await store.get_execution(execution_id)).status == CANCELED


async def test_cancel_a_running_execution_asks_its_worker(store: Store) -> None:
    execution_id = await new_execution(store)
    (claimed,) = await store.claim_executions(10, 30.0)
    await store.start_execution(execution_id, claimed.lease_token)
    assert await store.heartbeat_execution(execution_id, claimed.lease_token, 30.0) == RUNNING

    execution, previous = await store.request_cancel(execution_id)
    assert (previous, execution.status) == (RUNNING, CANCELING)
    assert execution.finished_at is None
    # Asking again changes nothing; the heartbeat tells the worker.
    again, previous_again = await store.request_cancel(execution_id)
    assert (previous_again, again.status) == (CANCELING, CANCELING)
    assert await store.heartbeat_execution(execution_id, claimed.lease_token, 30.0) == CANCELING

    finished = await store.finish_execution(
        execution_id, claimed.lease_token, CANCELED, {"message": "stopped"}
    )
    assert finished.status == CANCELED and finished.result == {"message": "stopped"}
    statuses = [entry["status"] for entry in finished.log]
    assert statuses[-2:] == [CANCELING, CANCELED]


async def test_cancel_after_the_end_changes_nothing(store: Store) -> None:
    execution_id = await new_execution(store)
    (claimed,) = await store.claim_executions(10, 30.0)
    await store.start_execution(execution_id, claimed.lease_token)
    done = await store.finish_execution(execution_id, claimed.lease_token, SUCCEEDED, {"ok": 1})
    execution, previous = await store.request_cancel(execution_id)
    assert (previous, execution.status) == (SUCCEEDED, SUCCEEDED)
    assert execution.result == {"ok": 1} and execution.log == done.log
    with pytest.raises(NotFound):
        await store.request_cancel("0" * 24)


async def test_canceling_execution_of_a_dead_worker_becomes_canceled(store: Store) -> None:
    execution_id = await new_execution(store)
    (claimed,) = await store.claim_executions(10, 0.2)
    await store.start_execution(execution_id, claimed.lease_token)
    await store.request_cancel(execution_id)
    await asyncio.sleep(0.4)  # the worker never heartbeats: its lease runs out
    # The next claim settles it instead of running it again.
    assert await store.claim_executions(10, 30.0) == []
    settled = await store.get_execution(execution_id)
    assert settled.status == CANCELED and settled.lease_token is None
    assert settled.finished_at is not None
