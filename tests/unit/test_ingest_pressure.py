"""The rules worker's share of the loop while webhooks arrive (engine.ingest_pressure)."""

from __future__ import annotations

import asyncio
import time

from engine.ingest_pressure import BUSY_WINDOW, MAX_PAUSE, IngestPressure


def test_quiet_ingest_means_no_pause() -> None:
    pressure = IngestPressure(0.25)
    assert not pressure.busy()
    assert pressure.pause_after(0.010) == 0.0


def test_busy_ingest_limits_rules_to_their_share() -> None:
    pressure = IngestPressure(0.25)
    pressure.saw_request()
    assert pressure.busy()
    # 10 ms of rules work, then 30 ms for ingest: rules keep a quarter of the time.
    assert abs(pressure.pause_after(0.010) - 0.030) < 1e-9
    assert IngestPressure(0.5).pause_after(0.010) == 0.0  # never saw a request


def test_a_pause_is_capped_so_rules_keep_moving() -> None:
    pressure = IngestPressure(0.01)
    pressure.saw_request()
    assert pressure.pause_after(10.0) == MAX_PAUSE


def test_share_of_one_never_yields() -> None:
    pressure = IngestPressure(1.0)
    pressure.saw_request()
    assert pressure.pause_after(0.5) == 0.0


def test_busy_ends_after_the_window() -> None:
    pressure = IngestPressure(0.25)
    pressure.saw_request()
    time.sleep(BUSY_WINDOW * 1.5)
    assert not pressure.busy()
    assert pressure.pause_after(0.010) == 0.0


async def test_yield_to_ingest_sleeps_only_while_busy() -> None:
    pressure = IngestPressure(0.5)
    started = time.monotonic()
    await pressure.yield_to_ingest(0.2)
    assert time.monotonic() - started < 0.05
    pressure.saw_request()
    started = time.monotonic()
    await pressure.yield_to_ingest(0.04)
    assert time.monotonic() - started >= 0.035
    await asyncio.sleep(0)
