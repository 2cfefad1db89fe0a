"""Execution starts and finishes written in groups (engine.store.ops.grouped), claims of
instant actions by name, and the actions worker running core.noop beside its process slots.

The store tests run on SQLite and PostgreSQL (the `store` fixture of conftest.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.config import Settings, WorkerSettings
from engine.errors import LeaseLost
from engine.http.context import RUNTIME
from engine.model.records import (
    REQUESTED,
    RUNNING,
    SCHEDULED,
    SUCCEEDED,
    NewExecution,
)
from engine.store import Store
from tests.support.app import FAST_POLL, settings_for
from tests.support.waiting import wait_execution


async def claimed_executions(store: Store, count: int, action: str = "core.noop"):
    for _ in range(count):
        await store.create_execution(NewExecution(action, {}))
    claimed = await store.claim_executions(count, 30)
    assert len(claimed) == count
    return claimed


async def test_finishes_arriving_together_share_transactions_and_fail_alone(store: Store) -> None:
    claimed = await claimed_executions(store, 30, "core.local")
    for execution in claimed:
        await store.start_execution(execution.id, execution.lease_token)
    stale = claimed[7]
    batches_before = store.grouped_write_stats.batches

    answers = await asyncio.gather(
        *(
            store.finish_execution(
                e.id, "stale" if e is stale else e.lease_token, SUCCEEDED, {"n": i}
            )
            for i, e in enumerate(claimed)
        ),
        return_exceptions=True,
    )

    assert isinstance(answers[7], LeaseLost)
    assert [a.status for i, a in enumerate(answers) if i != 7] == [SUCCEEDED] * 29
    assert [a.result for i, a in enumerate(answers) if i != 7] == [
        {"n": i} for i in range(30) if i != 7
    ]
    # Thirty finishes queued at once: far fewer transactions than finishes.
    assert store.grouped_write_stats.batches - batches_before < 10
    assert (await store.get_execution(stale.id)).status == RUNNING


async def test_start_first_logs_the_start_and_the_end_in_one_write(store: Store) -> None:
    [execution] = await claimed_executions(store, 1)
    done = await store.finish_execution(
        execution.id, execution.lease_token, SUCCEEDED, {}, start_first=True
    )
    assert [e["status"] for e in done.log] == [REQUESTED, SCHEDULED, RUNNING, SUCCEEDED]
    assert done.started_at is not None and done.started_at == done.finished_at
    assert done.lease_token is None


async def test_a_stale_start_first_leaves_its_execution_untouched_beside_others(
    store: Store,
) -> None:
    good, stale = await claimed_executions(store, 2)
    answers = await asyncio.gather(
        store.finish_execution(good.id, good.lease_token, SUCCEEDED, {}, start_first=True),
        store.finish_execution(stale.id, "stale", SUCCEEDED, {}, start_first=True),
        return_exceptions=True,
    )
    assert answers[0].status == SUCCEEDED
    assert isinstance(answers[1], LeaseLost)
    untouched = await store.get_execution(stale.id)
    assert (untouched.status, untouched.started_at) == (SCHEDULED, None)
    assert [e["status"] for e in untouched.log] == [REQUESTED, SCHEDULED]


async def test_claim_only_the_named_actions(store: Store) -> None:
    for action in ("core.noop", "core.local", "core.noop", "pack.it's", "core.local"):
        await store.create_execution(NewExecution(action, {}))

    noops = await store.claim_executions(10, 30, only_actions={"core.noop"})
    assert [e.action for e in noops] == ["core.noop", "core.noop"]
    # A quote in a name is a name, not SQL.
    quoted = await store.claim_executions(10, 30, only_actions={"pack.it's", "x') OR 1=1 --"})
    assert [e.action for e in quoted] == ["pack.it's"]
    assert await store.claim_executions(10, 30, only_actions=set()) == []
    rest = await store.claim_executions(10, 30)
    assert [e.action for e in rest] == ["core.local", "core.local"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(
        tmp_path,
        rules={},
        roles=("api", "actions"),
        workers=WorkerSettings(poll_interval=FAST_POLL, actions_concurrency=1),
    )


async def test_noop_executions_run_while_every_process_slot_is_busy(client) -> None:
    store = client.app[RUNTIME].store
    busy = await store.create_execution(NewExecution("core.local", {"cmd": "sleep 3"}))
    while (await store.get_execution(busy.id)).status != RUNNING:
        await asyncio.sleep(0.02)

    noops = [await store.create_execution(NewExecution("core.noop", {})) for _ in range(300)]
    finished = [await wait_execution(client, e.id) for e in noops]

    assert {e["status"] for e in finished} == {SUCCEEDED}
    stored = [await store.get_execution(e.id) for e in noops]
    assert all(e.started_at is not None and e.finished_at is not None for e in stored)
    # The one process slot was taken all along: the noops did not wait for it.
    assert (await store.get_execution(busy.id)).status == RUNNING
