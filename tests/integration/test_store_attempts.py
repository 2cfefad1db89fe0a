"""Attempt counting: only a run that started and whose worker died is a failed attempt.

An execution claimed (scheduled) whose worker died before starting it never ran: it is
claimed again at the same attempt and is never abandoned for it. Run on both stores.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.config import Settings, WorkerSettings
from engine.http.context import RUNTIME
from engine.model.records import ABANDONED, REQUESTED, RUNNING, SCHEDULED, SUCCEEDED, NewExecution
from engine.store import Store
from engine.workers.actions import run_actions_worker
from tests.support.app import FAST_POLL, settings_for
from tests.support.packs import pack_meta, write_pack

LEASE = 0.01
EXPIRED = 0.05  # sleep long enough for a LEASE-second lease to lapse


async def test_expired_scheduled_execution_is_reclaimed_at_the_same_attempt(store: Store) -> None:
    new = await store.create_execution(NewExecution("core.local", {"cmd": "true"}))
    [first] = await store.claim_executions(10, LEASE, max_attempts=1)
    await asyncio.sleep(EXPIRED)  # the claiming worker died before starting it

    # Even at max_attempts=1 a never-started execution is not abandoned.
    [again] = await store.claim_executions(10, 30, max_attempts=1)
    assert (again.id, again.status, again.attempt) == (new.id, SCHEDULED, 1)
    assert again.lease_token != first.lease_token
    running = await store.start_execution(new.id, again.lease_token)
    assert running.attempt == 1
    done = await store.finish_execution(new.id, again.lease_token, SUCCEEDED, None)
    assert [e["status"] for e in done.log] == [REQUESTED, SCHEDULED, SCHEDULED, RUNNING, SUCCEEDED]


async def test_expired_running_execution_counts_then_scheduled_retry_keeps_its_attempt(
    store: Store,
) -> None:
    new = await store.create_execution(NewExecution("core.local", {"cmd": "true"}))
    [first] = await store.claim_executions(10, LEASE, max_attempts=2)
    await store.start_execution(new.id, first.lease_token)
    await asyncio.sleep(EXPIRED)  # died mid-run: a failed attempt

    [second] = await store.claim_executions(10, LEASE, max_attempts=2)
    assert second.attempt == 2
    await asyncio.sleep(EXPIRED)  # attempt 2's worker died before starting it

    # At max_attempts, a scheduled (never started) attempt is still not abandoned.
    [third] = await store.claim_executions(10, LEASE, max_attempts=2)
    assert (third.id, third.status, third.attempt) == (new.id, SCHEDULED, 2)
    assert (await store.get_execution(new.id)).status == SCHEDULED

    await store.start_execution(new.id, third.lease_token)
    await asyncio.sleep(EXPIRED)  # and now attempt 2 died mid-run
    assert await store.claim_executions(10, 30, max_attempts=2) == []
    assert (await store.get_execution(new.id)).status == ABANDONED


# --- the actions worker: a `retry: never` action that never ran still runs ---------------


ONCE_FILES = {
    "actions/never.yaml": """\
        ---
        name: never
        runner_type: local-shell-cmd
        retry: never
        parameters:
          cmd: {default: "echo ran once"}
        """
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    packs = tmp_path / "packs"
    write_pack(packs, "once", ONCE_FILES, meta=pack_meta("once", description="one-shot actions"))
    return settings_for(
        tmp_path,
        packs=[packs],
        roles=("api",),  # the test runs the actions worker itself
        workers=WorkerSettings(poll_interval=FAST_POLL, lease_seconds=0.6),
    )


async def test_retry_never_action_claimed_but_never_started_still_runs(client) -> None:
    runtime = client.app[RUNTIME]
    store = runtime.store
    created = await store.create_execution(NewExecution("once.never", {}, {}))
    # Another worker claims it and dies before starting it: its lease simply lapses.
    [claimed] = await store.claim_executions(10, LEASE)
    assert claimed.id == created.id
    await asyncio.sleep(EXPIRED)

    stop = asyncio.Event()
    worker = asyncio.create_task(run_actions_worker(runtime, stop))
    try:
        for _ in range(1000):
            execution = await store.get_execution(created.id)
            if execution.status in (SUCCEEDED, ABANDONED, "failed"):
                break
            await asyncio.sleep(0.03)
    finally:
        stop.set()
        await worker
    assert (execution.status, execution.attempt) == (SUCCEEDED, 1), execution.result
    assert execution.result["stdout"] == "ran once"
