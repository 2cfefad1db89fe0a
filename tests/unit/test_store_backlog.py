"""The load-shedding backlog gauge: one count at a time, the last value meanwhile."""

from __future__ import annotations

import asyncio

import pytest

from engine.errors import StoreUnavailable
from engine.store.backlog import BacklogGauge


class SlowCount:
    """A count that blocks until released and records how many were started."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.started = 0
        self.release = asyncio.Event()
        self.fail = False

    async def __call__(self) -> int:
        self.started += 1
        await self.release.wait()
        if self.fail:
            raise StoreUnavailable("database down")
        return self.value


async def test_first_reads_all_wait_for_one_count() -> None:
    count = SlowCount(7)
    gauge = BacklogGauge(count)
    readers = [asyncio.create_task(gauge.value()) for _ in range(20)]
    await asyncio.sleep(0)
    count.release.set()
    assert await asyncio.gather(*readers) == [7] * 20
    assert count.started == 1


async def test_stale_refresh_is_single_flight_and_others_use_last_value() -> None:
    count = SlowCount(5)
    gauge = BacklogGauge(count, refresh_seconds=0.0)
    count.release.set()
    assert await gauge.value() == 5
    count.release.clear()
    count.value = 9
    starter = asyncio.create_task(gauge.value())
    while count.started < 2:
        await asyncio.sleep(0)
    # A count is running: readers get the last value at once instead of counting too.
    assert [await gauge.value() for _ in range(10)] == [5] * 10
    assert count.started == 2
    count.release.set()
    assert await starter == 9
    assert await gauge.value() == 9


async def test_adjustments_between_counts_and_forget_recounts() -> None:
    count = SlowCount(3)
    count.release.set()
    gauge = BacklogGauge(count, refresh_seconds=3600)
    assert await gauge.value() == 3
    gauge.added(4)
    gauge.claimed(10)
    assert await gauge.value() == 0  # never negative
    count.value = 2
    gauge.forget()
    assert await gauge.value() == 2
    assert count.started == 2


async def test_failed_count_reaches_its_waiters_and_is_retried() -> None:
    count = SlowCount(1)
    count.fail = True
    count.release.set()
    gauge = BacklogGauge(count, refresh_seconds=3600)
    with pytest.raises(StoreUnavailable):
        await gauge.value()
    count.fail = False
    assert await gauge.value() == 1
    assert count.started == 2


async def test_known_value_needs_a_fresh_trusted_count() -> None:
    count = SlowCount(6)
    gauge = BacklogGauge(count, refresh_seconds=3600)
    assert gauge.known() is None  # never counted
    count.release.set()
    assert await gauge.value() == 6
    gauge.added(2)
    assert gauge.known() == 8
    gauge.claimed(20)
    assert gauge.known() == 0  # never negative, as value() answers
    gauge.forget()
    assert gauge.known() is None  # to be recounted: value() must be awaited
    assert await gauge.value() == 6 and gauge.known() == 6
    stale = BacklogGauge(count, refresh_seconds=0.0)
    assert await stale.value() == 6
    assert stale.known() is None  # due for a count at every read
    assert count.started == 3
