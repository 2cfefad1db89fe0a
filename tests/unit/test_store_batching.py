"""Group commit on its own, with a plain in-memory `write_batch` standing in for a database."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from engine.errors import StoreBusy, StoreError, StoreUnavailable
from engine.store.batching import GroupCommitter
from tests.support.batching import Table, submit


async def started(table: Table, **options) -> GroupCommitter[str, str]:
    options.setdefault("batch_max", 100)
    options.setdefault("timeout", 5.0)
    committer = GroupCommitter(table.write, **options)
    committer.start()
    return committer


async def test_concurrent_submits_share_transactions_and_get_their_own_answer() -> None:
    table = Table()
    committer = await started(table)
    answers = await asyncio.gather(*(submit(committer, f"item{i}") for i in range(40)))
    assert answers == [f"ok:item{i}" for i in range(40)]
    assert len(table.calls) < 40
    assert committer.stats.items == 40
    await committer.close()


async def test_batch_max_bounds_each_transaction() -> None:
    table = Table()
    committer = await started(table, batch_max=3)
    await asyncio.gather(*(submit(committer, f"i{i}") for i in range(10)))
    assert max(len(call) for call in table.calls) == 3
    assert sorted(table.rows) == sorted(f"i{i}" for i in range(10))
    await committer.close()


async def test_a_bad_item_fails_alone_and_the_writer_keeps_going() -> None:
    table = Table()
    committer = await started(table)
    results = await asyncio.gather(
        submit(committer, "a"),
        submit(committer, "bad"),
        submit(committer, "b"),
        return_exceptions=True,
    )
    assert results[0] == "ok:a" and results[2] == "ok:b"
    assert isinstance(results[1], StoreError)
    assert await submit(committer, "c") == "ok:c"
    assert table.rows == ["a", "b", "c"]
    await committer.close()


async def test_unavailable_database_fails_the_whole_batch_without_retrying_singly() -> None:
    calls: list[list[str]] = []

    async def down(items: Sequence[str]) -> list[str]:
        calls.append(list(items))
        raise StoreUnavailable("connection refused")

    committer = GroupCommitter(down, batch_max=10, timeout=5)
    committer.start()
    results = await asyncio.gather(*(submit(committer, x) for x in "abc"), return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert calls == [["a", "b", "c"]]
    await committer.close()


async def test_waiting_past_the_timeout_is_busy_and_the_item_is_never_written() -> None:
    table = Table()
    committer = await started(table, timeout=0.05)
    table.gate.clear()  # the writer is stuck inside the first batch
    first = asyncio.create_task(submit(committer, "first"))
    await asyncio.sleep(0)
    while committer.queued:  # until the writer has taken "first" into its batch
        await asyncio.sleep(0)
    with pytest.raises(StoreBusy):
        await submit(committer, "second")
    table.gate.set()
    assert await first == "ok:first"  # taken before the timeout: waits for its batch
    await committer.close()
    assert table.rows == ["first"]


async def test_close_flushes_queued_items_then_refuses_new_ones() -> None:
    table = Table()
    committer = await started(table)
    pending = [asyncio.create_task(submit(committer, f"q{i}")) for i in range(5)]
    await asyncio.sleep(0)
    await committer.close()
    assert [await task for task in pending] == [f"ok:q{i}" for i in range(5)]
    with pytest.raises(StoreUnavailable):
        await submit(committer, "late")
