"""PostgreSQL ingest in one round trip: with no subscription wanting events, a batch is one
statement outside any transaction; when one does, that statement writes nothing and the
batch is stored with its events in a transaction."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from engine.config import StoreSettings
from engine.model import NewTriggerInstance
from engine.outbound.subscriptions import Secret, Subscription
from engine.store import create_store
from engine.store import postgres_ops as ops
from engine.store.codec import prepare_trigger_instance
from tests.integration.conftest import truncate_all

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
    await conn.prepare(ops._INSERT_ALONE)
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
    items = batch("k:1", None, "k:1")
    answers, inserted = await ops.insert_trigger_instances_alone(conn, items)
    await asyncio.sleep(0)  # asyncpg calls query loggers with call_soon
    assert queries == [ops._INSERT_ALONE]  # no BEGIN, no COMMIT, no second statement
    assert not conn.is_in_transaction()
    assert inserted == 2
    first, plain, _repeat = (item for item, _ in items)
    assert [(a.id, a.duplicate) for a in answers] == [
        (first.id, False),
        (plain.id, False),
        (first.id, True),
    ]
    # Committed: another connection sees the rows.
    other = await asyncpg.connect(pg_url)
    try:
        assert await stored_ids(other) == {first.id, plain.id}
    finally:
        await other.close()


async def test_a_subscription_wanting_events_holds_the_statement_back(pg_store, conn) -> None:
    await pg_store.create_subscription(subscription("created"))
    items = batch("k:2", None)
    assert await ops.insert_trigger_instances_alone(conn, items) is None
    assert await stored_ids(conn) == set()
    # The store then writes the rows and their events in one transaction.
    answers = await pg_store.add_trigger_instances([item for item, _ in items])
    assert {answer.id for answer in answers} == {item.id for item, _ in items}
    assert await stored_ids(conn) == {item.id for item, _ in items}
    deliveries = await pg_store.list_deliveries({}, 10, 0)
    assert deliveries.total == 2


async def test_a_duplicate_of_an_earlier_batch_is_answered_with_the_original(
    pg_store, conn, queries
) -> None:
    earlier = await pg_store.add_trigger_instances(
        [NewTriggerInstance("t", {"n": 0}, dedupe_key="k:3")]
    )
    items = batch("k:3")
    answers, inserted = await ops.insert_trigger_instances_alone(conn, items)
    assert inserted == 0
    assert [(a.id, a.duplicate) for a in answers] == [(earlier[0].id, True)]
    await asyncio.sleep(0)  # asyncpg calls query loggers with call_soon
    assert len(queries) == 2  # the insert, then the lookup of the original


async def test_the_store_takes_the_transaction_only_for_subscriptions(
    pg_store, conn, monkeypatch
) -> None:
    in_transaction: list[int] = []
    transactional = ops.insert_trigger_instances

    async def counted(connection, items):
        in_transaction.append(len(items))
        assert connection.is_in_transaction()
        return await transactional(connection, items)

    monkeypatch.setattr(ops, "insert_trigger_instances", counted)
    first = [NewTriggerInstance("t", {"n": n}) for n in range(3)]
    await pg_store.add_trigger_instances(first)
    assert in_transaction == []
    await pg_store.create_subscription(subscription("created"))
    second = [NewTriggerInstance("t", {"n": n}) for n in range(2)]
    await pg_store.add_trigger_instances(second)
    assert in_transaction == [2]
    assert await stored_ids(conn) == {item.id for item in first + second}
    assert (await pg_store.list_deliveries({}, 10, 0)).total == 2
