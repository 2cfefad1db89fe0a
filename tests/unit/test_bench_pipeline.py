"""The pure parts of bench/bench_pipeline.py and its report (bench/pipeline_report.py):
percentiles, ratio medians, the log count of webhook's finished runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH_DIR))

from bench_pipeline import LogCounter  # noqa: E402
from pipeline_report import Figures, median_ratio, percentile  # noqa: E402


def test_percentile_is_nearest_rank():
    values = [float(n) for n in range(100, 0, -1)]  # 1..100, unsorted
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    # Two values: p50 is the lower, p99 the upper (no interpolation).
    assert percentile([3.0, 1.0], 50) == 1.0
    assert percentile([3.0, 1.0], 99) == 3.0


def test_percentile_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        percentile([], 50)


def test_ratio_is_the_median_of_per_round_ratios_not_the_ratio_of_medians():
    mine = [10.0, 30.0, 20.0]
    theirs = [10.0, 10.0, 40.0]
    # Per round: 1.0, 3.0, 0.5 -> median 1.0; the ratio of medians would be 2.0.
    assert median_ratio(mine, theirs) == 1.0


def test_ratio_skips_rounds_where_the_baseline_measured_nothing():
    assert median_ratio([4.0, 5.0], [2.0, 0.0]) == 2.0
    assert median_ratio([4.0], [0.0]) is None


def test_figures_ratio_needs_the_same_rounds_on_both_sides():
    figures = Figures()
    for value in (100.0, 300.0):
        figures.add("ingest", "sqlite", value)
    figures.add("ingest", "bare", 200.0)
    assert figures.ratio("ingest", "sqlite", "ingest", "bare") is None
    figures.add("ingest", "bare", 300.0)
    assert figures.ratio("ingest", "sqlite", "ingest", "bare") == pytest.approx(0.75)
    assert figures.median("ingest", "sqlite") == 200.0
    assert figures.total("ingest", "sqlite") == 400.0
    assert figures.median("ingest", "postgres") is None


def test_log_counter_counts_only_complete_new_lines(tmp_path):
    log = tmp_path / "webhook.log"
    log.write_bytes(b"[a] finished handling bench\n[b] executing\n[c] finished hand")
    counter = LogCounter(log, b"finished handling")
    assert counter.update() == 1
    with log.open("ab") as out:
        out.write(b"ling bench\n[d] finished handling bench\n")
    assert counter.update() == 3
    assert counter.update() == 3
