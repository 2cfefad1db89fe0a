"""The results of bench/bench_pipeline.py: per-round figures, their medians and ratios,
and the markdown tables the lead pastes into BENCHMARKS.md."""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
from collections import defaultdict
from datetime import UTC, datetime

from harness import REPO

TIMES = "\u00d7"  # the sign of a ratio, as BENCHMARKS.md writes it


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile: the smallest value with `share` % of them at or below it."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(share / 100 * len(ordered)))
    return ordered[rank - 1]


def median_ratio(mine: list[float], theirs: list[float]) -> float | None:
    """The median of the per-round ratios (both sides measured in the same round); rounds
    where the baseline measured nothing are left out. None without any round."""
    ratios = [a / b for a, b in zip(mine, theirs, strict=True) if b]
    return statistics.median(ratios) if ratios else None


class Figures:
    """One value a round for each (measure, target)."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], list[float]] = defaultdict(list)

    def add(self, measure: str, target: str, value: float) -> None:
        self.values[measure, target].append(value)

    def median(self, measure: str, target: str) -> float | None:
        values = self.values.get((measure, target))
        return statistics.median(values) if values else None

    def total(self, measure: str, target: str) -> float | None:
        values = self.values.get((measure, target))
        return sum(values) if values else None

    def ratio(self, measure: str, target: str, base_measure: str, base: str) -> float | None:
        mine, theirs = self.values.get((measure, target)), self.values.get((base_measure, base))
        if not mine or not theirs or len(mine) != len(theirs):
            return None
        return median_ratio(mine, theirs)


def fmt(value: float | None, spec: str = ",.0f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def tables(
    figures: Figures, names: list[str], hookyards: list[str], args: argparse.Namespace
) -> str:
    """The results as markdown tables, one a scenario."""
    f = figures
    out = [
        f"**1. Ingest** — wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s,"
        " Hookyard's hook guarded by an API key (role webhook)",
        "",
        "| target | accepted/s | non-2xx | socket errors | vs bare | vs webhook |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in names:
        out.append(
            f"| {name} | {fmt(f.median('ingest', name))} "
            f"| {fmt(f.total('ingest_non2xx', name), ',.0f')} "
            f"| {fmt(f.total('ingest_errors', name), ',.0f')} "
            f"| {fmt(f.ratio('ingest', name, 'ingest', 'bare'), '.2f', TIMES)} "
            f"| {fmt(f.ratio('ingest', name, 'ingest', 'webhook'), '.2f', TIMES)} |"
        )
    out += [
        "",
        f"**2. End to end** — {args.webhooks:,} webhooks (and those in flight when wrk"
        " stopped) posted as fast as wrk can, rule →"
        " `core.noop`; executions/s from the first post to the last execution finished;"
        f" then wrk for {args.duration:g}s while a backlog of as many drains",
        "",
        "| target | posted/s | executions succeeded (not) of stored | executions/s"
        " | ingest while draining /s | vs bare | backlog at start → end |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in hookyards:
        out.append(
            f"| {name} | {fmt(f.median('e2e_posted', name))} "
            f"| {fmt(f.median('e2e_succeeded', name))} ({fmt(f.total('e2e_failed', name))})"
            f" of {fmt(f.median('e2e_stored', name))} "
            f"| {fmt(f.median('e2e_rate', name))} "
            f"| {fmt(f.median('draining', name))} "
            f"| {fmt(f.ratio('draining', name, 'ingest', 'bare'), '.2f', TIMES)} "
            f"| {fmt(f.median('backlog_start', name))} → {fmt(f.median('backlog_end', name))} |"
        )
    out += [
        "",
        f"**3. Latency** — {args.rate:,.0f} webhooks/s for {args.rate_seconds:g}s (paced"
        " aiohttp client); trigger instance occurrence_time → execution started_at",
        "",
        "| target | sent/s | p50 ms | p99 ms | max ms | failed posts | without execution |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in hookyards:
        out.append(
            f"| {name} | {fmt(f.median('sent_rate', name))} "
            f"| {fmt(f.median('p50', name), ',.1f')} | {fmt(f.median('p99', name), ',.1f')} "
            f"| {fmt(f.median('max', name), ',.1f')} | {fmt(f.total('rate_failed', name))} "
            f"| {fmt(f.total('rate_missing', name))} |"
        )
    shell_names = [*hookyards, *(["webhook"] if "webhook" in names else [])]
    out += [
        "",
        f"**4. Shell actions** — {args.shell_webhooks:,} webhooks; Hookyard runs"
        " `core.local cmd=true`, webhook runs /bin/true; first post to the last run finished",
        "",
        "| target | runs | runs/s | vs webhook |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name in shell_names:
        out.append(
            f"| {name} | {fmt(f.median('shell_runs', name))} "
            f"| {fmt(f.median('shell_rate', name))} "
            f"| {fmt(f.ratio('shell_rate', name, 'shell_rate', 'webhook'), '.2f', TIMES)} |"
        )
    out += [
        "",
        f"**5. Idle RSS** — {args.settle:g}s after start-up, VmRSS summed over the process tree",
        "",
        "| target | processes | RSS MiB |",
        "| --- | ---: | ---: |",
    ]
    for name in names:
        out.append(
            f"| {name} | {fmt(f.median('processes', name))} "
            f"| {fmt(f.median('rss', name), ',.1f')} |"
        )
    return "\n".join(out)


def fragment(
    figures: Figures,
    names: list[str],
    hookyards: list[str],
    args: argparse.Namespace,
    command: str,
    unfinished: list[str],
) -> str:
    """What the lead pastes into BENCHMARKS.md: the command, the run's facts, the tables,
    and any wait that ended with work still active."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return "\n".join(
        [
            "## The default serve, webhook to action (`bench/bench_pipeline.py`)",
            "",
            "Command (needs `apt-get install -y wrk webhook`, and PostgreSQL on"
            " 127.0.0.1:5432 for the postgres target):",
            "",
            f"    {command}",
            "",
            f"Commit {commit or '?'}, {datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} CPUs;"
            f" {args.repeat} rounds, medians; ratios are medians of per-round ratios.",
            "",
            tables(figures, names, hookyards, args),
            "",
            *(f"**Incomplete:** {note} (raise --drain-limit)" for note in unfinished),
        ]
    )
