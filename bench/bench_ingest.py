"""Ingest benchmark: durable webhooks accepted per second and p50/p99 latency, on loopback.

    python bench/bench_ingest.py [--duration 10] [--repeat 3] [--connections 64]
        [--targets bare,sqlite,postgres,webhook]
        [--pg-admin-url postgresql://postgres@127.0.0.1:5432/postgres]

Starts every target once, side by side, then runs `wrk` (Debian package `wrk`, with
bench/post_json.lua: one ~700-byte GitHub-push-like JSON body per POST) against each in
turn for --repeat rounds, the order rotating each round:

  bare      bench/bare_server.py: aiohttp parses the JSON and answers 202 (the ceiling)
  floor     bench/floor_server.py: bare plus the payload and one row of Hookyard's SQLite
            schema, group-committed on the loop: the floor cost of durable ingest
  naive     the same with one transaction per request (the issue's reference point)
  sqlite    Hookyard on a fresh SQLite file
  postgres  Hookyard on a fresh PostgreSQL database, created here on --pg-admin-url
            and dropped at the end

Hookyard runs as --topology says (an `api` role always includes its ingest writer child
process, engine.ingest.writer, which stores the webhooks):
  single    (the default, the product's one command) one `hookyard serve --roles
            api,rules` process takes the webhooks and evaluates them, the rules worker
            yielding to ingest while webhooks arrive (engine.ingest.pressure) and working
            off the backlog after;
  split     a `hookyard serve --roles api` process takes the webhooks while a second
            `hookyard serve --roles rules` process, at nice 10, evaluates them;
  ingest    durable ingest alone: the `--roles api` process is measured with no rules
            work beside it, and a `--roles rules` process is started after each run to
            work off (and so verify) the backlog. ingest.max_backlog is raised for it:
            nothing drains during a run, and load shedding is not what it measures.
  webhook   adnanh/webhook (Debian package `webhook`, Go) with a hook that runs /bin/true

Hookyard's hook is declared `auth: none` in a generated config file, like the other two
targets, which check no credential either. Between two runs the driver waits until the
target is quiet — Hookyard's rules worker has processed the backlog (counted in the
database), webhook has finished its /bin/true runs — so no target is measured while
another is still working.
Each figure is the median over the rounds; the ratio to `bare` is the median of the
per-round ratios (both measured in the same round). At the end the driver checks, for
each Hookyard target, that the store holds at least as many trigger instances as wrk
counted 2xx answers (a 202 means committed).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import (
    BENCH_DIR,
    REPO,
    Target,
    add_common_arguments,
    bench_session,
    children_of,
    cpu_seconds,
    free_port,
    parse_arguments,
    pg_database_url,
    run_wrk,
    start,
    store_rows,
    terminate,
)

HOOKS_FILE = BENCH_DIR / "webhook_hooks.json"
TARGET_NAMES = ("bare", "floor", "naive", "sqlite", "postgres", "webhook")

# The benchmark's hook takes no credential, like the bare server and the webhook hook;
# API-key checking (one SHA-256 and a lookup per request) is therefore not measured.
CONFIG_YAML = """\
webhooks:
  bench:
    auth: none
"""

RULE_YAML = """\
---
name: bench_hook
pack: bench
description: The benchmark's named webhook; matches every event, runs nothing.
trigger:
  type: core.st2.webhook
  parameters:
    url: bench
action:
  ref: core.noop
"""


def status_counts(target: Target) -> dict[str, int]:
    """Trigger instances by status, read from the database itself (the read API needs a
    key, and the count should not depend on the server under test)."""
    return dict(
        store_rows(
            target.database, "SELECT status, count(*) FROM trigger_instances GROUP BY status"
        )
    )


def database_cpu_seconds() -> float:
    """CPU time of every PostgreSQL server process on this machine, with that of the ones
    that ended (a backend or an autovacuum worker, reaped by the postmaster). It is taken
    to be the benchmark's: nothing else is meant to use the server during a run."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            total += cpu_seconds(int(entry.name))
        except OSError:
            continue  # exited meanwhile: its time is now in the postmaster's
    return total


def cpu_snapshot(target: Target) -> dict[str, float]:
    """Cumulative CPU seconds of what serves `target`: its process (with the children it
    reaped: webhook's /bin/true), its other processes (the children still running, such
    as Hookyard's writer child, and the helpers started beside it, such as the split
    topology's rules process), the database server, and this driver's reaped children
    (wrk; the drainer of the ingest topology is reaped before a run starts)."""
    pid = target.process.pid
    finished = resource.getrusage(resource.RUSAGE_CHILDREN)
    others = [*children_of(pid), *(helper.pid for helper in target.helper_processes)]
    snapshot = {
        "server": cpu_seconds(pid),
        "others": sum(cpu_seconds(other) for other in others),
        "wrk": finished.ru_utime + finished.ru_stime,
    }
    if target.name == "postgres":
        snapshot["database"] = database_cpu_seconds()
    return snapshot


def cpu_shares(
    before: dict[str, float], after: dict[str, float], accepted: int
) -> dict[str, float]:
    """CPU µs per accepted webhook, by part. A child of the server that ends during the
    run moves from "others" to "server" (its parent reaps it), so only the total is
    exact then; in a run without errors none does."""
    return {part: (after[part] - before[part]) / max(1, accepted) * 1e6 for part in before}


def wait_quiet(target: Target, limit_seconds: float) -> float:
    """Seconds until the target has no work left: Hookyard's backlog is processed and the
    process stops using CPU (webhook keeps running /bin/true after answering). Bounded."""
    if target.drainer is None:
        return _wait_quiet(target, limit_seconds)
    drainer = subprocess.Popen(
        target.drainer,
        cwd=target.cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **target.env},
        start_new_session=True,
    )
    try:
        return _wait_quiet(target, limit_seconds)
    finally:
        terminate(drainer)


def _wait_quiet(target: Target, limit_seconds: float) -> float:
    started = time.monotonic()
    last = cpu_seconds(target.process.pid)
    while time.monotonic() - started < limit_seconds:
        time.sleep(0.5)
        now = cpu_seconds(target.process.pid)
        busy, last = now - last, now
        if busy > 0.05:
            continue
        if target.database is None:
            break
        counts = status_counts(target)
        if not counts.get("pending") and not counts.get("processing"):
            break
    return time.monotonic() - started


def build_targets(args: argparse.Namespace, workdir: Path, ports: dict[str, int]) -> list[Target]:
    python = sys.executable
    roles = "api,rules" if args.topology == "single" else "api"
    hookyard = [python, "-m", "engine", "serve", "--roles", roles]
    rules_dir = workdir / "rules"
    # The rule's core.noop resolves in the built-in core pack, so each match records a
    # succeeded enforcement and a requested execution — the real work of a match.
    rules_dir.mkdir()
    (rules_dir / "bench.yaml").write_text(RULE_YAML)
    config_file = workdir / "config.yaml"
    config = CONFIG_YAML
    if args.topology == "ingest":
        # Nothing works off the backlog during a run, so a fast run would reach the
        # default bound (100,000 waiting instances) and be answered 503: shedding is not
        # what this topology measures.
        config += "ingest:\n  max_backlog: 10000000\n"
    config_file.write_text(config)
    common = ["--config", str(config_file), "--rules", str(rules_dir)]
    # The engine package is imported from the checkout, whatever the current folder.
    env = {"PYTHONPATH": str(REPO)}
    targets = []
    for name in args.targets:
        port = ports[name]
        base = f"http://127.0.0.1:{port}"
        if name == "bare":
            command = [python, str(BENCH_DIR / "bare_server.py"), "--port", str(port)]
            targets.append(Target(name, f"{base}/webhooks/bench", command, workdir, "/health"))
        elif name in ("floor", "naive"):
            mode = "group" if name == "floor" else "naive"
            command = [python, str(BENCH_DIR / "floor_server.py"), "--port", str(port)]
            command += ["--db", str(workdir / f"{name}.db"), "--mode", mode]
            url = f"{base}/webhooks/bench"
            targets.append(Target(name, url, command, workdir, "/health", env=env))
        elif name in ("sqlite", "postgres"):
            store = (
                f"sqlite:///{workdir / 'hookyard.db'}"
                if name == "sqlite"
                else pg_database_url(args.pg_admin_url, args.pg_database)
            )
            command = [*hookyard, "--store", store, "--port", str(port), *common]
            target = Target(name, f"{base}/webhooks/bench", command, workdir, "/ready", store, env)
            rules_process = [python, "-m", "engine", "serve", "--roles", "rules"]
            rules_process += ["--store", store, "--port", str(free_port()), *common]
            if args.topology == "split":
                target.helpers.append(["nice", "-n", "10", *rules_process])
            elif args.topology == "ingest":
                target.drainer = rules_process
            targets.append(target)
        elif name == "webhook":
            command = [
                args.webhook,
                "-hooks",
                str(HOOKS_FILE),
                "-ip",
                "127.0.0.1",
                "-port",
                str(port),
                "-http-methods",
                "POST",
            ]
            targets.append(Target(name, f"{base}/hooks/bench", command, workdir))
    return targets


def summarise(targets: list[Target], rounds: int) -> str:
    bare = next((t for t in targets if t.name == "bare"), None)
    lines = [
        "| target | accepted/s | p50 ms | p99 ms | errors (non-2xx) | vs bare |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for target in targets:
        runs = target.runs
        ratio = "—"
        if bare is not None and target is not bare:
            ratios = [
                mine.accepted_per_second / theirs.accepted_per_second
                for mine, theirs in zip(runs, bare.runs, strict=True)
            ]
            ratio = f"{statistics.median(ratios):.0%}"
        elif target is bare:
            ratio = "100%"
        lines.append(
            f"| {target.name} "
            f"| {statistics.median(r.accepted_per_second for r in runs):,.0f} "
            f"| {statistics.median(r.p50_ms for r in runs):.1f} "
            f"| {statistics.median(r.p99_ms for r in runs):.1f} "
            f"| {sum(r.errors for r in runs)} ({sum(r.non_2xx for r in runs)}) "
            f"| {ratio} |"
        )
    return "\n".join(lines)


def summarise_cpu(targets: list[Target]) -> str:
    """Where each target's CPU went, per accepted webhook: the median of each part, and
    the median of the rounds' totals (which need not be the sum of the parts' medians).
    The machine's CPUs are shared by all of these, so the total bounds the throughput."""
    parts = ("server", "others", "database", "wrk")
    lines = [
        "| target | server process µs | its other processes µs | database server µs | wrk µs"
        " | total µs |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for target in targets:
        medians = {
            part: statistics.median(run.cpu.get(part, 0.0) for run in target.runs) for part in parts
        }
        totals = statistics.median(sum(run.cpu.values()) for run in target.runs)
        cells = " | ".join(f"{medians[part]:.0f}" for part in parts)
        lines.append(f"| {target.name} | {cells} | {totals:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument(
        "--topology",
        choices=("single", "split", "ingest"),
        default="single",
        help="Hookyard as one process, as api and rules processes, or ingest alone",
    )
    parser.add_argument("--drain-limit", type=float, default=120.0, help="max wait for backlog")
    add_common_arguments(parser, TARGET_NAMES, "hookyard_bench")
    args = parse_arguments(parser, TARGET_NAMES)

    with bench_session(args, "hookyard-bench-", "postgres" in args.targets) as session:
        workdir, targets = session
        ports = {name: free_port() for name in args.targets}
        targets += build_targets(args, workdir, ports)
        for target in targets:
            start(target, ports[target.name], workdir)
            warm = run_wrk(target.url, args, args.warmup)
            target.accepted_total += warm.accepted
            wait_quiet(target, args.drain_limit)
        for round_index in range(args.repeat):
            shift = round_index % len(targets)
            for target in targets[shift:] + targets[:shift]:
                before = cpu_snapshot(target)
                run = run_wrk(target.url, args, args.duration)
                run.cpu = cpu_shares(before, cpu_snapshot(target), run.accepted)
                target.runs.append(run)
                target.accepted_total += run.accepted
                print(
                    f"round {round_index + 1} {target.name:9s} {run.accepted_per_second:9,.0f}/s"
                    f"  p50 {run.p50_ms:6.1f} ms  p99 {run.p99_ms:6.1f} ms"
                    f"  errors {run.errors} (non-2xx {run.non_2xx})",
                    flush=True,
                )
                quiet = wait_quiet(target, args.drain_limit)
                if target.database:
                    target.drain_seconds.append(quiet)
        print()
        print(
            f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, "
            f"{args.repeat} rounds, medians; {os.cpu_count()} CPUs; Hookyard {args.topology}"
        )
        print(summarise(targets, args.repeat))
        print()
        print(summarise_cpu(targets))
        print()
        for target in targets:
            if not target.database:
                continue
            counts = status_counts(target)
            stored = sum(counts.values())
            processed = counts.get("processed", 0)
            verdict = "ok" if stored >= target.accepted_total else "LOST WRITES"
            drain = statistics.median(target.drain_seconds) if target.drain_seconds else 0.0
            print(
                f"{target.name}: {target.accepted_total} answered 2xx, {stored} stored, "
                f"{processed} processed by the rules worker [{verdict}]; median wait for the "
                f"backlog after a run {drain:.1f}s"
            )


if __name__ == "__main__":
    main()
