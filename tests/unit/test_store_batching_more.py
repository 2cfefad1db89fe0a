"""Group commit: cancelled callers, several batches in flight, close, and the timeout sweeper.

A plain in-memory `write_batch` stands in for a database; gates (asyncio events) hold the
writer inside a batch so the tests can see what is queued, taken and in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from engine.errors import StoreBusy, StoreUnavailable
from engine.store.batching import GroupCommitter
from tests.support.batching import Table as BaseTable
from tests.support.batching import submit

DEADLINE = 5.0  # seconds any bounded wait below may take before the test fails


class Table(BaseTable):
    """The shared table, also counting how many writes run at once."""

    def __init__(self) -> None:
        super().__init__()
        self.running = 0
        self.peak = 0

    async def write(self, items: Sequence[str]) -> list[str]:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            return await super().write(items)
        finally:
            self.running -= 1


def started(table: Table, **options) -> GroupCommitter[str, str]:
    options.setdefault("batch_max", 100)
    options.setdefault("timeout", 5.0)
    committer = GroupCommitter(table.write, **options)
    committer.start()
    return committer


async def until(condition, what: str) -> None:
    """Poll `condition` on every loop turn until true, failing after DEADLINE seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0)


async def writer_stuck_in_first_batch(
    table: Table, committer: GroupCommitter[str, str]
) -> asyncio.Task[str]:
    """Submit "first" with the gate closed and wait until the writer holds it."""
    table.gate.clear()
    first = asyncio.create_task(submit(committer, "first"))
    await until(lambda: table.running == 1 and committer.queued == 0, "the writer took 'first'")
    return first


# --- cancellation -------------------------------------------------------------------------


async def test_cancelled_queued_submit_is_never_written_and_the_writer_keeps_going() -> None:
    table = Table()
    committer = started(table)
    first = await writer_stuck_in_first_batch(table, committer)

    cancelled = asyncio.create_task(submit(committer, "cancelled"))
    await until(lambda: committer.queued == 1, "'cancelled' is queued")
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    after = asyncio.create_task(submit(committer, "after"))
    await until(lambda: committer.queued == 2, "'after' is queued behind it")

    table.gate.set()
    assert await asyncio.wait_for(first, DEADLINE) == "ok:first"
    assert await asyncio.wait_for(after, DEADLINE) == "ok:after"
    assert await submit(committer, "later") == "ok:later"
    await committer.close()
    assert "cancelled" not in table.rows
    assert all("cancelled" not in call for call in table.calls)
    assert table.rows == ["first", "after", "later"]
    assert committer.stats.items == 3


async def test_cancelled_submit_already_taken_is_still_written() -> None:
    table = Table()
    committer = started(table)
    first = await writer_stuck_in_first_batch(table, committer)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    table.gate.set()
    assert await submit(committer, "next") == "ok:next"
    await committer.close()
    # Taken into a batch before the cancel: written, only its answer dropped.
    assert table.rows == ["first", "next"]


# --- several batches in flight --------------------------------------------------------------


async def test_concurrency_three_keeps_at_most_three_batches_in_flight() -> None:
    table = Table()
    committer = started(table, batch_max=1, concurrency=3)
    table.gate.clear()
    tasks = [asyncio.create_task(submit(committer, f"i{n}")) for n in range(10)]
    await until(lambda: table.running == 3, "three batches are in flight")
    # Give the writer many turns: it must not start a fourth while three are running.
    for _ in range(50):
        await asyncio.sleep(0)
    assert table.running == 3
    assert committer.queued == 7
    assert not any(task.done() for task in tasks)

    table.gate.set()
    answers = await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE)
    assert answers == [f"ok:i{n}" for n in range(10)]
    assert table.peak == 3
    assert sorted(table.rows) == sorted(f"i{n}" for n in range(10))
    assert all(len(call) == 1 for call in table.calls)
    await committer.close()


async def test_a_finished_batch_frees_its_slot_for_the_next_one() -> None:
    """Each call has its own gate: releasing one in-flight batch lets exactly one more in."""
    gates: dict[str, asyncio.Event] = {}
    running: set[str] = set()
    peak = 0

    async def write(items: Sequence[str]) -> list[str]:
        nonlocal peak
        (item,) = items
        gates[item] = asyncio.Event()
        running.add(item)
        peak = max(peak, len(running))
        await gates[item].wait()
        running.discard(item)
        return [f"ok:{item}"]

    committer = GroupCommitter(write, batch_max=1, timeout=5.0, concurrency=3)
    committer.start()
    tasks = {name: asyncio.create_task(submit(committer, name)) for name in "abcde"}
    await until(lambda: running == {"a", "b", "c"}, "a, b and c are in flight")

    gates["b"].set()
    assert await asyncio.wait_for(tasks["b"], DEADLINE) == "ok:b"
    await until(lambda: running == {"a", "c", "d"}, "d took b's slot")
    for _ in range(20):
        await asyncio.sleep(0)
    assert "e" not in running and committer.queued == 1

    for name in "acd":
        gates[name].set()
    await until(lambda: "e" in gates, "e is written")
    gates["e"].set()
    answers = await asyncio.wait_for(asyncio.gather(*tasks.values()), DEADLINE)
    assert answers == [f"ok:{name}" for name in "abcde"]
    assert peak == 3
    await committer.close()


async def test_close_waits_for_every_batch_in_flight_and_answers_everyone() -> None:
    table = Table()
    committer = started(table, batch_max=1, concurrency=3)
    table.gate.clear()
    tasks = [asyncio.create_task(submit(committer, f"c{n}")) for n in range(5)]
    await until(lambda: table.running == 3, "three batches are in flight")

    closing = asyncio.create_task(committer.close())
    for _ in range(50):
        await asyncio.sleep(0)
    assert not closing.done()  # three batches are still being written
    with pytest.raises(StoreUnavailable):
        await submit(committer, "late")

    table.gate.set()
    await asyncio.wait_for(closing, DEADLINE)
    assert all(task.done() for task in tasks)
    assert [task.result() for task in tasks] == [f"ok:c{n}" for n in range(5)]
    assert sorted(table.rows) == [f"c{n}" for n in range(5)]
    assert table.running == 0


# --- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_max": 10, "concurrency": 0}, "concurrency"),
        ({"batch_max": 10, "concurrency": -1}, "concurrency"),
        ({"batch_max": 0}, "batch_max"),
        ({"batch_max": -5}, "batch_max"),
    ],
)
def test_impossible_sizes_are_refused(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        GroupCommitter(Table().write, timeout=1.0, **options)


# --- the timeout sweeper -----------------------------------------------------------------------


async def test_sweeper_answers_busy_to_items_left_queued_and_they_are_never_written() -> None:
    table = Table()
    committer = started(table, timeout=0.05)
    first = await writer_stuck_in_first_batch(table, committer)

    loop = asyncio.get_running_loop()
    began = loop.time()
    queued = [asyncio.create_task(submit(committer, f"q{n}")) for n in range(4)]
    results = await asyncio.wait_for(asyncio.gather(*queued, return_exceptions=True), DEADLINE)
    waited = loop.time() - began
    assert all(isinstance(result, StoreBusy) for result in results), results
    assert all(result.retry_after >= 1.0 for result in results)
    assert 0.05 <= waited < 1.0  # the sweeper looks every timeout/4 seconds
    assert committer.queued == 0
    assert committer.stats.timeouts == 4
    assert not first.done()  # taken before the timeout: it waits for its batch

    table.gate.set()
    assert await asyncio.wait_for(first, DEADLINE) == "ok:first"
    assert await submit(committer, "after") == "ok:after"
    await committer.close()
    assert table.rows == ["first", "after"]
    assert not any(row.startswith("q") for call in table.calls for row in call)


async def test_sweeper_leaves_items_the_writer_takes_in_time() -> None:
    table = Table()
    committer = started(table, timeout=0.05)
    answers = await asyncio.gather(*(submit(committer, f"x{n}") for n in range(20)))
    assert answers == [f"ok:x{n}" for n in range(20)]
    # Several sweeps pass while idle: nothing is answered twice or counted as a timeout.
    await asyncio.sleep(0.2)
    assert committer.stats.timeouts == 0
    assert await submit(committer, "y") == "ok:y"
    await committer.close()
    assert committer.stats.timeouts == 0
