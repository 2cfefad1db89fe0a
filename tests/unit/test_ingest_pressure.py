"""The rules worker's share of the loop while webhooks arrive (engine.ingest.pressure)."""

from __future__ import annotations

import time

from engine.ingest.pressure import BUSY_WINDOW, MAX_PAUSE, IngestPressure


def busy(share: float, max_backlog: int = 1000) -> IngestPressure:
    pressure = IngestPressure(share, max_backlog)
    pressure.saw_request()
    return pressure


def test_quiet_ingest_means_no_pause() -> None:
    pressure = IngestPressure(0.25, 1000)
    assert not pressure.busy()
    assert pressure.pause_after(0.010, backlog=0) == 0.0


def test_busy_ingest_limits_rules_to_their_share() -> None:
    # 10 ms of rules work, then 30 ms for ingest: rules keep a quarter of the time.
    assert abs(busy(0.25).pause_after(0.010, backlog=1) - 0.030) < 1e-6


def test_the_share_grows_with_the_backlog_to_all_at_the_limit() -> None:
    pressure = busy(0.2, max_backlog=1000)
    assert pressure.share_at(0) == 0.2
    assert abs(pressure.share_at(500) - (0.2 + 0.8 * 0.25)) < 1e-9
    assert pressure.share_at(1000) == 1.0
    assert pressure.share_at(5000) == 1.0
    assert pressure.pause_after(0.010, backlog=250) < pressure.pause_after(0.010, backlog=1)
    assert pressure.pause_after(0.010, backlog=1000) == 0.0


def test_a_pause_is_capped_so_rules_keep_moving() -> None:
    assert busy(0.01).pause_after(10.0, backlog=1) == MAX_PAUSE


def test_share_of_one_never_yields() -> None:
    assert busy(1.0).pause_after(0.5, backlog=0) == 0.0


def test_busy_ends_after_the_window() -> None:
    pressure = busy(0.25)
    time.sleep(BUSY_WINDOW * 1.5)
    assert not pressure.busy()
    assert pressure.pause_after(0.010, backlog=0) == 0.0


async def test_yield_to_ingest_sleeps_only_while_busy() -> None:
    quiet = IngestPressure(0.5, 1000)
    started = time.monotonic()
    await quiet.yield_to_ingest(0.2, backlog=0)
    assert time.monotonic() - started < 0.05
    pressure = busy(0.5)
    started = time.monotonic()
    await pressure.yield_to_ingest(0.04, backlog=1)
    assert time.monotonic() - started >= 0.035


def test_no_pause_while_the_rules_worker_keeps_up() -> None:
    # At most one claim's worth waiting: rules keep up, so they never yield, however
    # busy ingest is; one more instance waiting and they take their share again.
    pressure = IngestPressure(0.25, 1000, keeps_up_below=200)
    pressure.saw_request()
    assert pressure.pause_after(0.010, backlog=0) == 0.0
    assert pressure.pause_after(0.010, backlog=200) == 0.0
    assert pressure.pause_after(0.010, backlog=201) > 0.0
