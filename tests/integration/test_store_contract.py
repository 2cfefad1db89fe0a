"""The store contract: one suite, run on SQLite and on PostgreSQL (see conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from engine.config import StoreSettings
from engine.errors import ConfigError, LeaseLost, NotFound, StoreBusy, StoreError
from engine.model.records import (
    ABANDONED,
    ENFORCEMENT_FAILED,
    ENFORCEMENT_SUCCEEDED,
    PROCESSED,
    PROCESSING,
    PROCESSING_FAILED,
    REQUESTED,
    RUNNING,
    SCHEDULED,
    SUCCEEDED,
    EnforcementOutcome,
    NewExecution,
    NewTriggerInstance,
)
from engine.store import Store, UnstorableValue, create_store
from engine.store.migrations import postgres as pg_migrations
from engine.store.migrations import sqlite as sqlite_migrations

BASE_TIME = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def instance(trigger: str = "core.st2.webhook", **fields) -> NewTriggerInstance:
    return NewTriggerInstance(trigger=trigger, payload=fields.pop("payload", {"n": 1}), **fields)


def outcome(rule_ref: str = "pack.rule", **fields) -> EnforcementOutcome:
    fields.setdefault("status", ENFORCEMENT_SUCCEEDED)
    return EnforcementOutcome(rule_ref=rule_ref, **fields)


async def claim_one(store: Store, item: NewTriggerInstance, lease: float = 30.0):
    await store.add_trigger_instance(item)
    claimed = await store.claim_trigger_instances(10, lease)
    assert [c.id for c in claimed] == [item.id]
    return claimed[0]


# --- trigger instances: add, get, list ---------------------------------------------------


async def test_add_then_get_returns_what_was_stored(store: Store) -> None:
    item = instance(
        payload={"body": {"a": [1, 2, {"b": None}], "s": "é"}, "headers": {"X": "1"}},
        webhook="sample",
        occurrence_time=BASE_TIME,
    )
    accepted = await store.add_trigger_instance(item)
    assert (accepted.id, accepted.duplicate) == (item.id, False)

    got = await store.get_trigger_instance(item.id)
    assert got.payload == item.payload
    assert (got.trigger, got.webhook, got.status) == (item.trigger, "sample", "pending")
    assert got.occurrence_time == BASE_TIME
    assert got.occurrence_time.utcoffset() == timedelta(0)
    assert got.lease_token is None
    with pytest.raises(NotFound):
        await store.get_trigger_instance("0" * 24)


async def test_list_filters_paging_and_total_newest_first(store: Store) -> None:
    items = [
        instance("a.t", webhook="one", occurrence_time=BASE_TIME + timedelta(seconds=i))
        for i in range(5)
    ] + [
        instance("b.t", webhook="two", occurrence_time=BASE_TIME + timedelta(seconds=10 + i))
        for i in range(3)
    ]
    await store.add_trigger_instances(items)
    newest_first = [i.id for i in sorted(items, key=lambda i: i.occurrence_time, reverse=True)]

    page = await store.list_trigger_instances({}, 3, 0)
    assert page.total == 8
    assert [i.id for i in page.items] == newest_first[:3]
    pages = [await store.list_trigger_instances({}, 3, offset) for offset in (0, 3, 6)]
    assert [i.id for p in pages for i in p.items] == newest_first

    by_trigger = await store.list_trigger_instances({"trigger": "a.t"}, 100, 0)
    assert by_trigger.total == 5
    assert {i.trigger for i in by_trigger.items} == {"a.t"}
    assert (await store.list_trigger_instances({"webhook": "two"}, 100, 0)).total == 3
    either = await store.list_trigger_instances({"trigger": ["a.t", "b.t"]}, 1, 0)
    assert either.total == 8
    assert len(either.items) == 1

    window = await store.list_trigger_instances(
        {
            "timestamp_gt": (BASE_TIME + timedelta(seconds=2)).isoformat(),
            "timestamp_lt": "2024-05-01T12:00:11Z",
        },
        100,
        0,
    )
    assert [i.occurrence_time.second for i in window.items] == [10, 4, 3]

    await store.claim_trigger_instances(2, 30)
    assert (await store.list_trigger_instances({"status": "processing"}, 100, 0)).total == 2
    assert (await store.list_trigger_instances({"status": "pending"}, 100, 0)).total == 6
    assert (await store.list_trigger_instances({"trigger": None}, 100, 0)).total == 8

    with pytest.raises(StoreError, match="unknown filter 'rule'"):
        await store.list_trigger_instances({"rule": "x"}, 10, 0)
    with pytest.raises(StoreError, match="timestamp_gt"):
        await store.list_trigger_instances({"timestamp_gt": "yesterday"}, 10, 0)


# --- dedupe and group commit ----------------------------------------------------------


async def test_dedupe_key_sequential_returns_the_original(store: Store) -> None:
    first = await store.add_trigger_instance(instance(dedupe_key="delivery-1"))
    again = await store.add_trigger_instance(instance(dedupe_key="delivery-1"))
    other = await store.add_trigger_instance(instance(dedupe_key="delivery-2"))
    assert not first.duplicate
    assert (again.id, again.duplicate) == (first.id, True)
    assert not other.duplicate
    assert (await store.list_trigger_instances({}, 10, 0)).total == 2


async def test_dedupe_within_one_batch(store: Store) -> None:
    existing = await store.add_trigger_instance(instance(dedupe_key="old"))
    batch = [
        instance(dedupe_key="k1"),
        instance(dedupe_key="k1"),
        instance(),
        instance(dedupe_key="old"),
        instance(dedupe_key="old"),
        instance(dedupe_key="k2"),
    ]
    answers = await store.add_trigger_instances(batch)
    assert [(a.id, a.duplicate) for a in answers] == [
        (batch[0].id, False),
        (batch[0].id, True),
        (batch[2].id, False),
        (existing.id, True),
        (existing.id, True),
        (batch[5].id, False),
    ]
    assert (await store.list_trigger_instances({}, 100, 0)).total == 4


async def test_concurrent_adds_with_one_key_store_one_row(store: Store) -> None:
    answers = await asyncio.gather(
        *(store.add_trigger_instance(instance(dedupe_key="same")) for _ in range(20))
    )
    assert len({a.id for a in answers}) == 1
    assert sum(not a.duplicate for a in answers) == 1
    page = await store.list_trigger_instances({}, 100, 0)
    assert page.total == 1
    assert page.items[0].id == answers[0].id


async def test_group_commit_batches_concurrent_adds(store: Store) -> None:
    before = store.commit_batches
    items = [instance(payload={"i": i}) for i in range(50)]
    answers = await asyncio.gather(*(store.add_trigger_instance(item) for item in items))
    assert [a.id for a in answers] == [i.id for i in items]
    assert 1 <= store.commit_batches - before < 50
    assert (await store.list_trigger_instances({}, 100, 0)).total == 50
    assert await store.pending_backlog() == 50


@pytest.mark.parametrize("bad_value", [float("nan"), "nul\x00char", {"k\x00": 1}])
async def test_unstorable_payload_fails_only_its_own_add(store: Store, bad_value) -> None:
    good = [instance(payload={"i": i, "text": "back\\u0000slash"}) for i in range(3)]
    bad = instance(payload={"x": bad_value})
    results = await asyncio.gather(
        *(store.add_trigger_instance(item) for item in [good[0], bad, *good[1:]]),
        return_exceptions=True,
    )
    assert isinstance(results[1], UnstorableValue)
    assert [r.id for r in results if not isinstance(r, Exception)] == [g.id for g in good]
    assert (await store.get_trigger_instance(good[0].id)).payload == good[0].payload
    with pytest.raises(NotFound):
        await store.get_trigger_instance(bad.id)


@contextlib.asynccontextmanager
async def external_write_lock(store_url: str) -> AsyncIterator[None]:
    """Another client holding the write lock on the trigger_instances table."""
    if store_url.startswith("sqlite:///"):
        conn = sqlite3.connect(store_url[len("sqlite:///") :], isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
    else:
        pg = await asyncpg.connect(store_url)
        tx = pg.transaction()
        await tx.start()
        await pg.execute("LOCK TABLE trigger_instances IN EXCLUSIVE MODE")
        try:
            yield
        finally:
            await tx.rollback()
            await pg.close()


async def test_busy_database_answers_store_busy_and_stores_nothing(
    open_store, store_url: str, store: Store
) -> None:
    impatient = await open_store(busy_timeout=0.3)
    item = instance()
    async with external_write_lock(store_url):
        with pytest.raises(StoreBusy) as raised:
            await impatient.add_trigger_instance(item)
    assert raised.value.retry_after >= 1
    later = await impatient.add_trigger_instance(instance())
    page = await store.list_trigger_instances({}, 10, 0)
    assert [i.id for i in page.items] == [later.id]


# --- claiming trigger instances ----------------------------------------------------------


async def test_claim_leases_rows_once(store: Store) -> None:
    items = [instance(payload={"i": i}) for i in range(3)]
    await store.add_trigger_instances(items)
    claimed = await store.claim_trigger_instances(10, 30)
    assert sorted(c.id for c in claimed) == sorted(i.id for i in items)
    assert all(c.status == PROCESSING and c.lease_token for c in claimed)
    assert len({c.lease_token for c in claimed}) == 3
    assert await store.claim_trigger_instances(10, 30) == []
    assert (await store.get_trigger_instance(items[0].id)).status == PROCESSING
    assert await store.pending_backlog() == 0


async def test_claim_takes_oldest_first_up_to_limit(store: Store) -> None:
    items = [instance(payload={"i": i}) for i in range(5)]
    await store.add_trigger_instances(items)
    first = await store.claim_trigger_instances(2, 30)
    second = await store.claim_trigger_instances(10, 30)
    ordered = sorted(i.id for i in items)
    assert [c.id for c in first] == ordered[:2]
    assert [c.id for c in second] == ordered[2:]


async def test_expired_lease_is_reclaimed_and_old_token_is_fenced(store: Store) -> None:
    item = instance()
    first = await claim_one(store, item, lease=0.01)
    await asyncio.sleep(0.05)
    second = await store.claim_trigger_instances(10, 30)
    assert [c.id for c in second] == [item.id]
    assert second[0].lease_token != first.lease_token

    execution = NewExecution("core.local", {"cmd": "echo"})
    stale = [outcome(execution=execution, once_per_key="k")]
    with pytest.raises(LeaseLost):
        await store.record_enforcements(item.id, first.lease_token, stale, PROCESSED)
    assert (await store.list_enforcements({}, 10, 0)).total == 0
    assert (await store.list_executions({}, 10, 0)).total == 0
    assert (await store.get_trigger_instance(item.id)).status == PROCESSING

    # The rolled-back once_per key was not remembered: the current owner's write lands.
    fresh = [outcome(execution=NewExecution("core.local", {}), once_per_key="k")]
    written = await store.record_enforcements(item.id, second[0].lease_token, fresh, PROCESSED)
    assert written == [fresh[0].id]
    done = await store.get_trigger_instance(item.id)
    assert (done.status, done.lease_token) == (PROCESSED, None)
    with pytest.raises(LeaseLost):
        await store.record_enforcements(item.id, second[0].lease_token, [], PROCESSED)
    with pytest.raises(NotFound):
        await store.record_enforcements("f" * 24, "token", [], PROCESSED)
    with pytest.raises(StoreError, match="final status"):
        await store.record_enforcements(item.id, second[0].lease_token, [], "pending")


async def test_record_enforcements_writes_enforcements_and_executions(store: Store) -> None:
    item = instance(trigger="github.push")
    claimed = await claim_one(store, item)
    context = {"trigger_instance": {"id": item.id}, "rule": {"ref": "gh.deploy", "id": "r1"}}
    matched = outcome(
        "gh.deploy",
        rule_id="r1",
        trace=[{"key": "trigger.body.ref", "ok": True}],
        execution=NewExecution("core.local", {"cmd": "deploy"}, context),
    )
    failed = outcome(
        "gh.notify", status=ENFORCEMENT_FAILED, failure_reason="render error: x is undefined"
    )
    written = await store.record_enforcements(
        item.id, claimed.lease_token, [matched, failed], PROCESSING_FAILED
    )
    assert written == [matched.id, failed.id]
    assert (await store.get_trigger_instance(item.id)).status == PROCESSING_FAILED

    page = await store.list_enforcements({"trigger_instance": item.id}, 10, 0)
    assert page.total == 2
    by_rule = {e.rule_ref: e for e in page.items}
    deploy = by_rule["gh.deploy"]
    assert deploy.execution_id == matched.execution.id
    assert deploy.trace == [{"key": "trigger.body.ref", "ok": True}]
    assert (deploy.rule_id, deploy.status, deploy.trigger_instance_id) == (
        "r1",
        "succeeded",
        item.id,
    )
    assert deploy.enforced_at.utcoffset() == timedelta(0)
    notify = by_rule["gh.notify"]
    assert (notify.status, notify.execution_id) == ("failed", None)
    assert notify.failure_reason == "render error: x is undefined"
    assert (await store.list_enforcements({"rule_ref": "gh.notify"}, 10, 0)).total == 1
    exec_filter = {"execution": matched.execution.id}
    assert [e.id for e in (await store.list_enforcements(exec_filter, 10, 0)).items] == [matched.id]

    execution = await store.get_execution(matched.execution.id)
    assert (execution.status, execution.action, execution.attempt) == (REQUESTED, "core.local", 1)
    assert execution.parameters == {"cmd": "deploy"}
    assert execution.context == context
    assert [entry["status"] for entry in execution.log] == [REQUESTED]
    assert (await store.list_executions({"trigger_instance": item.id}, 10, 0)).total == 1
    assert (await store.list_executions({"rule": "gh.deploy"}, 10, 0)).total == 1
    assert (await store.list_executions({"rule": "gh.notify"}, 10, 0)).total == 0


async def test_once_per_key_skips_the_outcome_the_second_time(store: Store) -> None:
    first_item, second_item = instance(), instance()
    first = await claim_one(store, first_item)
    once = outcome("p.once", once_per_key="user-7", execution=NewExecution("core.noop", {}))
    assert await store.record_enforcements(first_item.id, first.lease_token, [once], PROCESSED)

    second = await claim_one(store, second_item)
    repeat = outcome("p.once", once_per_key="user-7", execution=NewExecution("core.noop", {}))
    other_key = outcome("p.once", once_per_key="user-8")
    other_rule = outcome("p.other", once_per_key="user-7")
    written = await store.record_enforcements(
        second_item.id, second.lease_token, [repeat, other_key, other_rule], PROCESSED
    )
    assert written == [other_key.id, other_rule.id]
    assert (await store.list_executions({}, 10, 0)).total == 1
    assert (await store.list_enforcements({"rule_ref": "p.once"}, 10, 0)).total == 2
    assert (await store.get_trigger_instance(second_item.id)).status == PROCESSED


async def test_release_gives_back_only_rows_still_leased_by_the_caller(store: Store) -> None:
    items = [instance(payload={"i": i}) for i in range(2)]
    await store.add_trigger_instances(items)
    claimed = await store.claim_trigger_instances(10, 30)
    await store.release_trigger_instances(
        {claimed[0].id: claimed[0].lease_token, claimed[1].id: "not-the-token"}
    )
    assert (await store.get_trigger_instance(claimed[0].id)).status == "pending"
    assert (await store.get_trigger_instance(claimed[1].id)).status == PROCESSING
    again = await store.claim_trigger_instances(10, 30)
    assert [c.id for c in again] == [claimed[0].id]


async def test_claims_are_counted_and_a_release_gives_its_claim_back(store: Store) -> None:
    item = instance()
    await store.add_trigger_instances([item])
    assert (await store.get_trigger_instance(item.id)).claims == 0
    first = (await store.claim_trigger_instances(10, 0.01))[0]
    assert first.claims == 1
    await asyncio.sleep(0.05)  # the lease expires: the worker is taken to have died
    second = (await store.claim_trigger_instances(10, 30))[0]
    assert second.claims == 2
    await store.release_trigger_instances({item.id: second.lease_token})
    assert (await store.get_trigger_instance(item.id)).claims == 1
    third = (await store.claim_trigger_instances(10, 30))[0]
    assert third.claims == 2


async def test_two_claimers_never_take_the_same_row(store: Store, open_store) -> None:
    other = await open_store()
    items = [instance(payload={"i": i}) for i in range(200)]
    await store.add_trigger_instances(items)

    async def claim_loop(claimer: Store) -> list[str]:
        taken: list[str] = []
        while batch := await claimer.claim_trigger_instances(7, 30):
            for claimed in batch:
                await claimer.record_enforcements(
                    claimed.id, claimed.lease_token, [outcome()], PROCESSED
                )
            taken.extend(c.id for c in batch)
        return taken

    first, second = await asyncio.gather(claim_loop(store), claim_loop(other))
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(i.id for i in items)
    assert (await store.list_enforcements({}, 1, 0)).total == 200
    assert (await store.list_trigger_instances({"status": PROCESSED}, 1, 0)).total == 200


# --- executions --------------------------------------------------------------------------


async def test_execution_lifecycle_with_fencing(store: Store) -> None:
    new = NewExecution("core.http", {"url": "http://x"}, {"user": "stanley"})
    created = await store.create_execution(new)
    assert (created.id, created.status, created.context) == (new.id, REQUESTED, {"user": "stanley"})
    assert created.created_at is not None and created.created_at.utcoffset() == timedelta(0)

    [claimed] = await store.claim_executions(10, 30)
    assert (claimed.id, claimed.status, claimed.attempt) == (new.id, SCHEDULED, 1)
    assert claimed.lease_token and claimed.lease_expires_at > datetime.now(UTC)
    assert await store.claim_executions(10, 30) == []

    with pytest.raises(LeaseLost):
        await store.start_execution(new.id, "stale")
    running = await store.start_execution(new.id, claimed.lease_token)
    assert running.status == RUNNING and running.started_at is not None
    await store.heartbeat_execution(new.id, claimed.lease_token, 60)
    extended = await store.get_execution(new.id)
    assert extended.lease_expires_at > claimed.lease_expires_at
    with pytest.raises(LeaseLost):
        await store.heartbeat_execution(new.id, "stale", 60)
    with pytest.raises(LeaseLost):
        await store.finish_execution(new.id, "stale", SUCCEEDED, {"status": 200})
    with pytest.raises(StoreError, match="not a final execution status"):
        await store.finish_execution(new.id, claimed.lease_token, RUNNING, None)

    done = await store.finish_execution(new.id, claimed.lease_token, SUCCEEDED, {"status": 200})
    assert (done.status, done.result, done.lease_token) == (SUCCEEDED, {"status": 200}, None)
    assert done.finished_at is not None and done.finished_at >= done.started_at
    assert [e["status"] for e in done.log] == [REQUESTED, SCHEDULED, RUNNING, SUCCEEDED]
    assert all(e["timestamp"].endswith("Z") for e in done.log)
    assert await store.get_execution(new.id) == done
    with pytest.raises(LeaseLost):
        await store.finish_execution(new.id, claimed.lease_token, SUCCEEDED, None)
    with pytest.raises(NotFound):
        await store.get_execution("0" * 24)
    with pytest.raises(NotFound):
        await store.heartbeat_execution("0" * 24, "x", 1)


async def test_lease_expired_execution_is_retried_then_abandoned(store: Store) -> None:
    new = await store.create_execution(NewExecution("core.local", {"cmd": "sleep 100"}))
    [first] = await store.claim_executions(10, 0.01)
    await store.start_execution(new.id, first.lease_token)
    await asyncio.sleep(0.05)

    [retry] = await store.claim_executions(10, 0.01, max_attempts=2)
    assert (retry.id, retry.attempt, retry.status) == (new.id, 2, SCHEDULED)
    assert retry.lease_token != first.lease_token
    with pytest.raises(LeaseLost):
        await store.finish_execution(new.id, first.lease_token, SUCCEEDED, None)
    await store.start_execution(new.id, retry.lease_token)
    await asyncio.sleep(0.05)

    assert await store.claim_executions(10, 30, max_attempts=2) == []
    abandoned = await store.get_execution(new.id)
    assert (abandoned.status, abandoned.lease_token) == (ABANDONED, None)
    assert abandoned.finished_at is not None
    assert [e["status"] for e in abandoned.log] == [
        REQUESTED,
        SCHEDULED,
        RUNNING,
        SCHEDULED,
        RUNNING,
        ABANDONED,
    ]
    with pytest.raises(LeaseLost):
        await store.finish_execution(new.id, retry.lease_token, SUCCEEDED, None)


async def test_execution_process_is_recorded_fenced_and_listed_until_finished(
    store: Store,
) -> None:
    process = {"host": "h", "boot_id": "b", "pid": 4321, "pgid": 4321, "start_time": 99}
    first = await store.create_execution(NewExecution("core.local", {"cmd": "sleep 100"}))
    other = await store.create_execution(NewExecution("core.local", {"cmd": "true"}))
    claimed = {e.id: e for e in await store.claim_executions(10, 0.01)}
    token = claimed[first.id].lease_token
    await store.start_execution(first.id, token)
    assert await store.execution_processes() == {}

    with pytest.raises(LeaseLost):
        await store.record_execution_process(first.id, "stale", process)
    with pytest.raises(NotFound):
        await store.record_execution_process("0" * 24, "x", process)
    await store.record_execution_process(first.id, token, process)
    await store.record_execution_process(other.id, claimed[other.id].lease_token, {"pid": 7})
    assert await store.execution_processes() == {first.id: process, other.id: {"pid": 7}}
    assert await store.execution_processes([first.id, "0" * 24]) == {first.id: process}
    assert await store.execution_processes([]) == {}

    # A re-claimed execution still shows the process its previous attempt ran in.
    await asyncio.sleep(0.05)
    retried = {e.id: e for e in await store.claim_executions(10, 30, max_attempts=3)}
    assert retried[first.id].attempt == 2
    assert await store.execution_processes([first.id]) == {first.id: process}
    await store.finish_execution(other.id, retried[other.id].lease_token, SUCCEEDED, None)
    with pytest.raises(LeaseLost):
        await store.record_execution_process(other.id, retried[other.id].lease_token, process)
    assert await store.execution_processes() == {first.id: process}


async def test_list_executions_filters_and_order(store: Store) -> None:
    created = []
    for action in ("a.one", "a.two", "a.one"):
        created.append(await store.create_execution(NewExecution(action, {})))
        await asyncio.sleep(0.002)  # distinct created_at, so "newest first" is observable
    page = await store.list_executions({}, 10, 0)
    assert [e.id for e in page.items] == [e.id for e in reversed(created)]
    assert (await store.list_executions({"action": "a.one"}, 10, 0)).total == 2
    assert (await store.list_executions({"status": REQUESTED}, 10, 0)).total == 3
    after_first = {"timestamp_gt": created[0].created_at}
    assert (await store.list_executions(after_first, 10, 0)).total == 2
    with pytest.raises(StoreError, match="unknown filter"):
        await store.list_executions({"user": "x"}, 10, 0)


# --- wake-up hints -----------------------------------------------------------------------


async def test_wait_for_work_wakes_on_new_rows(store: Store, open_store) -> None:
    producer = await open_store()
    await store.wait_for_work("trigger_instances", 0)  # consume hints from setup
    waiter = asyncio.create_task(store.wait_for_work("trigger_instances", 30))
    await asyncio.sleep(0.05)
    await store.add_trigger_instance(instance())
    await asyncio.wait_for(waiter, 10)

    if hasattr(producer, "url"):  # PostgreSQL: a NOTIFY from another pool wakes us
        await store.wait_for_work("executions", 0)
        waiter = asyncio.create_task(store.wait_for_work("executions", 30))
        await asyncio.sleep(0.05)
        await producer.create_execution(NewExecution("core.noop", {}))
        await asyncio.wait_for(waiter, 10)
    with pytest.raises(StoreError, match="unknown queue"):
        await store.wait_for_work("nope", 0)


# The other sessions' LISTEN connections on the test database.
LISTENING = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
    " AND query LIKE 'LISTEN %' AND pid <> pg_backend_pid()"
)


async def assert_woken_by_a_new_execution(store: Store, producer: Store) -> None:
    """`store` listens: a wait for executions ends when `producer` creates one."""
    await store.wait_for_work("executions", 0)  # consume the wake-up sent on connecting
    waiter = asyncio.create_task(store.wait_for_work("executions", 30))
    await asyncio.sleep(0.05)
    await producer.create_execution(NewExecution("core.noop", {}))
    await asyncio.wait_for(waiter, 10)


async def test_postgres_listener_reconnects_after_being_killed(
    store: Store, open_store, store_url: str
) -> None:
    if not store_url.startswith("postgresql://"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    producer = await open_store()
    admin = await asyncpg.connect(store_url)
    try:
        # A store listens from its first wait for work on, not before.
        assert await admin.fetch(LISTENING) == []
        for waiting in (store, producer):
            await waiting.wait_for_work("executions", 0)
        killed = {row["pid"] for row in await admin.fetch(LISTENING)}
        assert len(killed) == 2  # one per store object
        for pid in killed:
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
        # Waiting is what reconnects; keep waiting briefly until a new listener shows up.
        for _ in range(100):
            await store.wait_for_work("executions", 0.05)
            if {row["pid"] for row in await admin.fetch(LISTENING)} - killed:
                break
        else:
            pytest.fail("the store did not open a new LISTEN connection")
    finally:
        await admin.close()
    await assert_woken_by_a_new_execution(store, producer)


async def test_postgres_a_wait_cancelled_while_it_connects_still_listens(
    store: Store, open_store, store_url: str
) -> None:
    """The first wait opens the LISTEN connection; cancelling that waiter (a worker
    stopping, a delivery hint no longer needed) must not abandon the connection, nor count
    as a failed attempt that leaves the next waits polling."""
    if not store_url.startswith("postgresql://"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    producer = await open_store()
    admin = await asyncpg.connect(store_url)
    try:
        cancelled = asyncio.create_task(store.wait_for_work("deliveries", 30))
        await asyncio.sleep(0)  # it is opening the connection now
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        for _ in range(100):
            if await admin.fetch(LISTENING):
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the cancelled wait left the store without a LISTEN connection")
    finally:
        await admin.close()
    await assert_woken_by_a_new_execution(store, producer)


async def test_postgres_closing_the_store_while_a_wait_connects_ends_the_wait(
    open_store, store_url: str
) -> None:
    if not store_url.startswith("postgresql://"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    closing = await open_store()
    waiting = asyncio.create_task(closing.wait_for_work("executions", 30))
    for _ in range(2):  # the wait starts the connect, and the connect starts
        await asyncio.sleep(0)
    connecting = closing._connecting
    assert connecting is not None and not connecting.done()  # what this test is about
    await closing.close()
    # Returned, not cancelled: nobody cancelled the waiter.
    assert await asyncio.wait_for(waiting, 5) is None
    admin = await asyncpg.connect(store_url)
    try:
        assert await admin.fetch(LISTENING) == []
    finally:
        await admin.close()


# --- lifecycle ---------------------------------------------------------------------------


async def test_data_survives_close_and_reopen(store: Store, open_store) -> None:
    item = instance(payload={"kept": True})
    await store.add_trigger_instance(item)
    await store.close()
    with pytest.raises(StoreError):
        await store.add_trigger_instance(instance())
    reopened = await open_store()
    assert (await reopened.get_trigger_instance(item.id)).payload == {"kept": True}
    await reopened.ping()


async def test_migrations_are_idempotent_on_reopen(store: Store, open_store, store_url) -> None:
    await open_store()
    await open_store()
    if store_url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(store_url[len("sqlite:///") :])) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            assert version == len(sqlite_migrations.MIGRATIONS)
    else:
        conn = await asyncpg.connect(store_url)
        try:
            versions = await conn.fetch("SELECT version FROM hookyard_schema_version")
        finally:
            await conn.close()
        assert sorted(r["version"] for r in versions) == list(
            range(1, len(pg_migrations.MIGRATIONS) + 1)
        )


# --- create_store ------------------------------------------------------------------------


def test_create_store_resolves_relative_sqlite_paths(tmp_path: Path) -> None:
    store = create_store(StoreSettings(url="sqlite:///data/sub/h.db"), tmp_path)
    assert store.path == tmp_path / "data" / "sub" / "h.db"
    assert (tmp_path / "data" / "sub").is_dir()
    absolute = create_store(StoreSettings(url=f"sqlite:///{tmp_path}/abs.db"), Path("/nowhere"))
    assert absolute.path == tmp_path / "abs.db"


@pytest.mark.parametrize(
    "url", ["mysql://u:secret@h/db", "sqlite://:memory:", "sqlite:///", "hookyard.db"]
)
def test_create_store_rejects_other_urls(url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        create_store(StoreSettings(url=url), tmp_path)
    message = str(raised.value)
    assert "accepted forms" in message and "postgresql://" in message
    assert "secret" not in message
