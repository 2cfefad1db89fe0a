"""The stream hub over a real store: entries published in feed order on both backends,
and on PostgreSQL an entry committed late (numbered before one already visible) is waited
for, while a rolled-back number is skipped after the wait."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from engine.config import StreamSettings
from engine.http.stream_hub import GAP_WAIT_SECONDS, StreamHub
from engine.model.records import NewTriggerInstance
from engine.model.stream import FeedEntry
from engine.store import Store


def label(entry: FeedEntry) -> list[tuple[str, dict]]:
    return [(entry.name, {"object": entry.object_id})]


def published(hub: StreamHub) -> list[str]:
    return [
        hub.event_at(index).data.split('"object": "')[1].split('"')[0]
        for index in range(hub.first_index, hub.end_index)
    ]


async def wait_published(hub: StreamHub, count: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while hub.end_index - hub.first_index < count:
        assert time.monotonic() < deadline, f"published only {published(hub)}"
        await asyncio.sleep(0.02)
    return published(hub)


async def add(store: Store, name: str) -> str:
    [accepted] = await store.add_trigger_instances(
        [NewTriggerInstance(trigger="core.st2.webhook", payload={"name": name})]
    )
    return accepted.id


@pytest.fixture
async def hub(store: Store):
    started = StreamHub(store, StreamSettings(poll_interval=0.05, batch_seconds=0.0), label)
    started.start()
    await started.connect()
    yield started
    started.disconnect()
    await started.stop()


async def test_entries_are_published_in_feed_order(store: Store, hub: StreamHub) -> None:
    ids = [await add(store, str(n)) for n in range(5)]
    assert await wait_published(hub, 5) == ids
    # A ring position per event, in order; nothing before the hub's start.
    assert [hub.event_at(i).index for i in range(hub.first_index, hub.end_index)] == list(
        range(hub.first_index, hub.end_index)
    )


async def test_a_late_commit_is_waited_for_and_a_rollback_skipped(
    store: Store, hub: StreamHub, store_url: str
) -> None:
    if not store_url.startswith("postgresql://"):
        pytest.skip("SQLite numbers entries in commit order")
    conn = await asyncpg.connect(store_url)
    try:
        held = conn.transaction()
        await held.start()
        await conn.execute(
            "INSERT INTO stream_feed (name, object_id) VALUES ('st2.execution__update', 'held')"
        )
        after = await add(store, "after")  # numbered after `held`, visible first
        await asyncio.sleep(0.5)
        assert published(hub) == []  # waiting for the number before it
        await held.commit()
        assert await wait_published(hub, 2) == ["held", after]

        rolled = conn.transaction()
        await rolled.start()
        await conn.execute(
            "INSERT INTO stream_feed (name, object_id) VALUES ('st2.execution__update', 'gone')"
        )
        later = await add(store, "later")
        await rolled.rollback()
        started = time.monotonic()
        assert await wait_published(hub, 3) == ["held", after, later]
        # Only once the number had been missing for the wait.
        assert time.monotonic() - started > GAP_WAIT_SECONDS / 2
    finally:
        await conn.close()
