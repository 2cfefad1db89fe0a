"""The store's change feed and execution output, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from engine.model.records import NewExecution, NewTriggerInstance
from engine.model.stream import OutputChunk
from engine.store import Store


def at(second: int) -> datetime:
    return datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC)


async def test_changes_are_fed_in_order_with_what_they_reference(store: Store) -> None:
    head = await store.feed_head()
    [accepted] = await store.add_trigger_instances(
        [NewTriggerInstance(trigger="core.st2.webhook", payload={"a": 1})]
    )
    execution = await store.create_execution(NewExecution(action="core.noop", parameters={}))
    [claimed] = await store.claim_executions(1, 30.0)
    await store.start_execution(claimed.id, claimed.lease_token or "")
    await store.append_output(
        execution.id,
        "core.noop",
        "noop",
        [OutputChunk("stdout", "one\n", at(1)), OutputChunk("stderr", "two\x00\n", at(2))],
    )
    await store.finish_execution(claimed.id, claimed.lease_token or "", "succeeded", {"ok": 1})

    entries = await store.read_feed(head, 100)
    assert [(e.name, e.status) for e in entries] == [
        ("st2.trigger_instance__create", None),
        ("st2.execution__create", "requested"),
        ("st2.execution__update", "scheduled"),
        ("st2.execution__update", "running"),
        ("st2.execution.output__create", None),
        ("st2.execution.output__create", None),
        ("st2.execution__update", "succeeded"),
    ]
    seqs = [e.seq for e in entries]
    assert seqs == sorted(seqs) and seqs[0] > head
    assert entries[0].instance is not None and entries[0].instance.id == accepted.id
    assert entries[0].instance.payload == {"a": 1}
    # The row as it is now; the entry keeps the status it had.
    assert entries[1].execution is not None and entries[1].execution.status == "succeeded"
    assert entries[4].data["data"] == "one\n" and entries[4].data["output_type"] == "stdout"
    # NUL is not text PostgreSQL stores: both backends replace it alike.
    assert entries[5].data["data"] == "two\ufffd\n"
    assert await store.feed_head() == seqs[-1]
    # Paging through the feed.
    assert [e.seq for e in await store.read_feed(seqs[2], 2)] == seqs[3:5]

    output = await store.list_output(execution.id)
    assert [(c.output_type, c.data) for c in output] == [
        ("stdout", "one\n"),
        ("stderr", "two\ufffd\n"),
    ]
    assert [c.data for c in await store.list_output(execution.id, "stderr")] == ["two\ufffd\n"]
    assert await store.list_output("nobody") == []


async def test_trim_keeps_the_newest_entries(store: Store) -> None:
    await store.add_trigger_instances(
        [NewTriggerInstance(trigger="core.st2.webhook", payload={"n": n}) for n in range(10)]
    )
    head = await store.feed_head()
    assert await store.trim_feed(3) >= 7
    kept = await store.read_feed(0, 100)
    assert [e.seq for e in kept] == [head - 2, head - 1, head]


async def test_concurrent_writers_number_every_entry_once(open_store) -> None:
    # Two stores on one database: two processes' worth of writers.
    first, second = await open_store(), await open_store()
    head = await first.feed_head()

    async def write(store: Store, tag: str) -> None:
        for n in range(20):
            await store.add_trigger_instances(
                [NewTriggerInstance(trigger="core.st2.webhook", payload={"w": tag, "n": n})]
            )

    await asyncio.gather(write(first, "a"), write(second, "b"))
    entries = await second.read_feed(head, 1000)
    assert len(entries) == 40
    assert len({e.seq for e in entries}) == 40
    payloads = sorted((e.instance.payload["w"], e.instance.payload["n"]) for e in entries)
    assert payloads == sorted([(w, n) for w in "ab" for n in range(20)])
