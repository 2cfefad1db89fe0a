"""PostgreSQL ingest in one round trip: a batch without dedupe keys, while no subscription
is enabled, is one statement outside any transaction. Otherwise it is written in a
transaction: a subscription's events with the rows, and a duplicate's original looked up
before anything commits, so that an error answer still means "not stored"."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from engine.config import StoreSettings
from engine.errors import StoreError
from engine.model.records import NewTriggerInstance
from engine.outbound.subscriptions import Secret, Subscription
from engine.store import create_store
from engine.store import postgres as postgres_store
from engine.store.codec import prepare_trigger_instance
from engine.store.ops import columns, instances
from tests.support.postgres import truncate_all

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg_store(pg_url: str, tmp_path: Path):
    await truncate_all(pg_url)
    store = create_store(StoreSettings(url=pg_url), tmp_path)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def conn(pg_url: str):
    connection = await asyncpg.connect(pg_url)
    yield connection
    await connection.close()


@pytest.fixture
async def queries(conn, pg_store) -> list[str]:
    """The statements `conn` sends from now on, in order."""
    # Prepared first, so that asyncpg's one-time type introspection is not counted.
    await conn.prepare(instances._PG_INSERT_ALONE)
    sent: list[str] = []
    conn.add_query_logger(lambda record: sent.append(record.query))
    return sent


def batch(*keys: str | None) -> list:
    return [
        prepare_trigger_instance(NewTriggerInstance("t", {"n": n}, dedupe_key=key))
        for n, key in enumerate(keys)
    ]


def subscription(sid: str, enabled: bool = True) -> Subscription:
    return Subscription(
        id=sid,
        url=f"http://127.0.0.1:9/{sid}",
        custom_headers={},
        events=("trigger_instance.created",),
        secrets=(Secret("whsec_c2VjcmV0"),),
        enabled=enabled,
    )


async def stored_ids(connection: asyncpg.Connection) -> set[str]:
    return {row["id"] for row in await connection.fetch("SELECT id FROM trigger_instances")}


async def test_without_subscriptions_a_batch_is_one_statement_outside_a_transaction(
    pg_store, conn, queries, pg_url
) -> None:
    await pg_store.create_subscription(subscription("off", enabled=False))
    items = batch(None, None)
    answers, inserted = await instances.pg_insert_alone(conn, items)
    await asyncio.sleep(0)  # asyncpg calls query loggers with call_soon
    assert queries == [instances._PG_INSERT_ALONE]  # no BEGIN, no COMMIT, no second statement
    assert not conn.is_in_transaction()
    assert inserted == 2
    assert [(a.id, a.duplicate) for a in answers] == [(item.id, False) for item, _ in items]
    # Committed: another connection sees the rows.
    other = await asyncpg.connect(pg_url)
    try:
        assert await stored_ids(other) == {item.id for item, _ in items}
    finally:
        await other.close()


async def test_the_one_statement_sends_the_rules_workers_wake_up_hint(pg_store, conn) -> None:
    heard: list[str] = []
    await conn.add_listener(
        columns.channel("trigger_instances"), lambda *args: heard.append(args[2])
    )
    sender = await pg_store._ingest_pool.acquire()
    try:
        assert await instances.pg_insert_alone(sender, batch(None)) is not None
    finally:
        await pg_store._ingest_pool.release(sender)
    for _ in range(100):
        if heard:
            break
        await asyncio.sleep(0.02)
    assert heard == [columns.channel("trigger_instances")]


async def test_a_subscription_holds_the_statement_back(pg_store, conn) -> None:
    await pg_store.create_subscription(subscription("created"))
    items = batch(None, None)
    assert await instances.pg_insert_alone(conn, items) is None
    assert await stored_ids(conn) == set()
    # The store then writes the rows and their events in one transaction.
    answers = await pg_store.add_trigger_instances([item for item, _ in items])
    assert {answer.id for answer in answers} == {item.id for item, _ in items}
    assert await stored_ids(conn) == {item.id for item, _ in items}
    deliveries = await pg_store.list_deliveries({}, 10, 0)
    assert deliveries.total == 2


async def test_a_batch_with_dedupe_keys_is_not_one_statement(pg_store, conn, queries) -> None:
    assert await instances.pg_insert_alone(conn, batch(None, "k:1")) is None
    await asyncio.sleep(0)
    assert queries == []
    assert await stored_ids(conn) == set()


async def test_the_store_takes_the_transaction_for_keys_and_subscriptions(
    pg_store, conn, monkeypatch
) -> None:
    calls: list[tuple[str, int]] = []
    alone, transactional = instances.pg_insert_alone, instances.pg_insert

    async def counted_alone(connection, items):
        calls.append(("alone", len(items)))
        return await alone(connection, items)

    async def counted(connection, items):
        calls.append(("transaction", len(items)))
        assert connection.is_in_transaction()
        return await transactional(connection, items)

    monkeypatch.setattr(instances, "pg_insert_alone", counted_alone)
    monkeypatch.setattr(instances, "pg_insert", counted)
    plain = [NewTriggerInstance("t", {"n": n}) for n in range(3)]
    await pg_store.add_trigger_instances(plain)
    assert calls == [("alone", 3)]
    keyed = [NewTriggerInstance("t", {"n": 9}, dedupe_key="k:9"), NewTriggerInstance("t", {})]
    first, _ = await pg_store.add_trigger_instances(keyed)
    repeat = await pg_store.add_trigger_instances([NewTriggerInstance("t", {}, dedupe_key="k:9")])
    assert (repeat[0].id, repeat[0].duplicate) == (first.id, True)
    assert calls[1:] == [("transaction", 2), ("transaction", 1)]
    calls.clear()
    monkeypatch.setattr(postgres_store, "_SUBSCRIBED_RECHECK", 0.5)
    await pg_store.create_subscription(subscription("created"))
    for size in (2, 1):
        await pg_store.add_trigger_instances([NewTriggerInstance("t", {}) for _ in range(size)])
    # Held back once; the next batch goes straight to the transaction.
    assert calls == [("alone", 2), ("transaction", 2), ("transaction", 1)]
    assert (await pg_store.list_deliveries({}, 10, 0)).total == 3
    # After the recheck period, one statement is tried again.
    calls.clear()
    await asyncio.sleep(0.6)
    await pg_store.add_trigger_instances([NewTriggerInstance("t", {})])
    assert calls == [("alone", 1), ("transaction", 1)]


async def test_an_error_answer_means_nothing_was_stored(pg_url, tmp_path, monkeypatch) -> None:
    """A lock requested on the table between the insert and the lookup of a duplicate's
    original (a migration's ALTER TABLE, VACUUM FULL...) makes the store answer an error
    after its lock_timeout; the rows must then not be committed, or the sender's retry
    stores a webhook without a dedupe key twice."""
    await truncate_all(pg_url)
    store = create_store(StoreSettings(url=pg_url, busy_timeout=0.5), tmp_path)
    await store.open()
    blocker = await asyncpg.connect(pg_url)
    check = await asyncpg.connect(pg_url)
    try:
        earlier = await store.add_trigger_instances(
            [NewTriggerInstance("t", {"n": 0}, dedupe_key="k:1")]
        )
        original_fetch = asyncpg.connection.Connection.fetch
        locking: list[asyncio.Future] = []

        async def fetch(self, query, *args, **kwargs):
            if query.startswith("SELECT dedupe_key, id FROM trigger_instances") and not locking:
                await blocker.execute("BEGIN")
                locking.append(
                    asyncio.ensure_future(
                        blocker.execute("LOCK TABLE trigger_instances IN ACCESS EXCLUSIVE MODE")
                    )
                )
                await asyncio.sleep(0.3)
            return await original_fetch(self, query, *args, **kwargs)

        monkeypatch.setattr(asyncpg.connection.Connection, "fetch", fetch)
        fresh = NewTriggerInstance("t", {"n": 1})
        repeat = NewTriggerInstance("t", {"n": 2}, dedupe_key="k:1")
        error: StoreError | None = None
        try:
            answers = await store.add_trigger_instances([fresh, repeat])
        except StoreError as exc:
            error = exc
        monkeypatch.undo()
        assert locking, "the lookup of the duplicate's original did not run"
        await locking[0]
        await blocker.execute("ROLLBACK")
        stored = await stored_ids(check)
        if error is None:
            assert stored == {earlier[0].id, fresh.id}
            assert (answers[1].id, answers[1].duplicate) == (earlier[0].id, True)
        else:
            assert stored == {earlier[0].id}, f"answered {error!r} but committed {stored}"
    finally:
        await check.close()
        await blocker.close()
        await store.close()
