"""Soak: the default `hookyard serve` under a steady load for a long time, with a short
retention, to show that it can run for months — flat disk, flat memory, ingest latency
unchanged while the retention role purges.

    python bench/bench_soak.py [--minutes 30] [--rate 500] [--retention 5m]
        [--window 60] [--store postgresql://...] [--markdown soak.md]

Hookyard runs as a user runs it (every role, auth on, a sender's API key, a rule firing
`core.noop` per webhook — bench/bench_pipeline.py's setup), with
`retention.trigger_instances` and `retention.executions` set to --retention and the
retention role passing every 10 s. A paced aiohttp client posts --rate webhooks a second
for --minutes; every --window seconds the driver records:
  accepted/s and failed posts, the POST round trip's p50 and p99 (client side),
  the store's size (SQLite: the file plus its WAL; PostgreSQL: pg_database_size),
  the rows held (trigger instances, executions) and the VmRSS of serve's process tree.
The summary compares the last window with the first one after the retention began to
purge (--retention after the start): disk and RSS growth, and p99 before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from bench_pipeline import NOOP_HOOK, create_sender_key, hookyard_target, write_rules
from harness import (
    bench_session,
    free_port,
    pg_database_url,
    process_tree,
    rss_kib,
    start,
    store_rows,
)
from pipeline_report import percentile

from engine.support.durations import duration_seconds


@dataclass
class Window:
    minute: float
    accepted_per_second: float
    failed: int
    p50_ms: float
    p99_ms: float
    store_mib: float
    instances: int
    executions: int
    rss_mib: float


def store_bytes(database: str, folder: Path) -> int:
    if database.startswith("postgresql://"):
        return int(store_rows(database, "SELECT pg_database_size(current_database())")[0][0])
    files = [folder / "data" / name for name in ("hookyard.db", "hookyard.db-wal")]
    return sum(f.stat().st_size for f in files if f.exists())


async def post_window(
    url: str, headers: dict[str, str], rate: float, seconds: float
) -> tuple[int, int, list[float]]:
    """Post at `rate` for `seconds`: (accepted, failed, round trips in ms)."""
    body = json.dumps({"ref": "refs/heads/main", "repository": {"full_name": "acme/api"}})
    headers = {**headers, "Content-Type": "application/json"}
    accepted = failed = 0
    round_trips: list[float] = []

    async def post(session: aiohttp.ClientSession) -> None:
        nonlocal accepted, failed
        began = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                ok = 200 <= response.status < 300
        except aiohttp.ClientError:
            ok = False
        round_trips.append((time.perf_counter() - began) * 1000)
        if ok:
            accepted += 1
        else:
            failed += 1

    loop = asyncio.get_running_loop()
    total = round(rate * seconds)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        tasks = []
        started = loop.time()
        for index in range(total):
            delay = started + index / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(session)))
        await asyncio.gather(*tasks)
    return accepted, failed, round_trips


def soak(args: argparse.Namespace) -> list[Window]:
    postgres = bool(args.store)
    with bench_session(args, "hookyard-soak-", postgres) as (workdir, targets):
        store = pg_database_url(args.pg_admin_url, args.pg_database) if postgres else None
        write_rules(workdir / "rules")
        port = free_port()
        target = hookyard_target("soak", port, workdir, store)
        seconds = int(duration_seconds(args.retention))
        target.env.update(
            {
                "HOOKYARD_RETENTION__TRIGGER_INSTANCES": f"{seconds}s",
                "HOOKYARD_RETENTION__EXECUTIONS": f"{seconds}s",
                "HOOKYARD_RETENTION__INTERVAL": "10",
            }
        )
        key = create_sender_key(target, store)
        targets.append(target)
        start(target, port, workdir)
        url = f"http://127.0.0.1:{port}/webhooks/{NOOP_HOOK}"
        windows: list[Window] = []
        began = time.monotonic()
        while time.monotonic() - began < args.minutes * 60:
            accepted, failed, trips = asyncio.run(
                post_window(url, {"St2-Api-Key": key}, args.rate, args.window)
            )
            pid = target.process.pid  # type: ignore[union-attr]
            held = store_rows(
                target.database,  # type: ignore[arg-type]
                "SELECT (SELECT count(*) FROM trigger_instances),"
                " (SELECT count(*) FROM executions)",
            )[0]
            window = Window(
                minute=round((time.monotonic() - began) / 60, 1),
                accepted_per_second=accepted / args.window,
                failed=failed,
                p50_ms=percentile(trips, 50),
                p99_ms=percentile(trips, 99),
                store_mib=store_bytes(target.database, target.cwd) / 2**20,  # type: ignore[arg-type]
                instances=int(held[0]),
                executions=int(held[1]),
                rss_mib=sum(rss_kib(p) for p in process_tree(pid)) / 1024,
            )
            windows.append(window)
            print(
                f"{window.minute:5.1f} min  {window.accepted_per_second:7.1f}/s"
                f"  failed {window.failed}  p50 {window.p50_ms:6.1f} ms"
                f"  p99 {window.p99_ms:7.1f} ms  store {window.store_mib:7.1f} MiB"
                f"  rows {window.instances}/{window.executions}  RSS {window.rss_mib:6.1f} MiB",
                flush=True,
            )
    return windows


def report(windows: list[Window], args: argparse.Namespace) -> str:
    retention_minutes = duration_seconds(args.retention) / 60
    purging = [w for w in windows if w.minute > retention_minutes + 1] or windows[-1:]
    before = [w for w in windows if w.minute <= retention_minutes] or windows[:1]
    first, last = purging[0], purging[-1]
    lines = [
        f"Soak: {args.minutes:g} min at {args.rate:g} webhooks/s, retention {args.retention}"
        f" ({'PostgreSQL' if args.store else 'SQLite'}), windows of {args.window:g} s.",
        "",
        "| minute | accepted/s | failed | p50 ms | p99 ms | store MiB | instances | "
        "executions | RSS MiB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w in windows:
        lines.append(
            f"| {w.minute:g} | {w.accepted_per_second:.0f} | {w.failed} | {w.p50_ms:.1f} |"
            f" {w.p99_ms:.1f} | {w.store_mib:.1f} | {w.instances} | {w.executions} |"
            f" {w.rss_mib:.0f} |"
        )
    p99_before = statistics.median(w.p99_ms for w in before)
    p99_purging = statistics.median(w.p99_ms for w in purging)
    lines += [
        "",
        f"While purging (minute {first.minute:g} to {last.minute:g}): store"
        f" {first.store_mib:.1f} → {last.store_mib:.1f} MiB, RSS {first.rss_mib:.0f} →"
        f" {last.rss_mib:.0f} MiB; ingest p99 median {p99_before:.1f} ms before the first"
        f" purge, {p99_purging:.1f} ms while purging.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--retention", default="5m")
    parser.add_argument("--window", type=float, default=60)
    parser.add_argument("--store", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--pg-database", default=f"hookyard_soak_{os.getpid()}")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--markdown", help="write the report here too")
    args = parser.parse_args()
    windows = soak(args)
    text = report(windows, args)
    print("\n" + text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
