"""The benchmark of what users run: the default `hookyard serve`, webhook to action.

    python bench/bench_pipeline.py [--duration 8] [--repeat 3] [--webhooks 20000]
        [--rate 1000] [--rate-seconds 5] [--shell-webhooks 2000]
        [--targets bare,webhook,sqlite,postgres] [--markdown pipeline.md]

Needs wrk and adnanh/webhook (Debian: `apt-get install -y wrk webhook`) and, for the
postgres target, PostgreSQL at --pg-admin-url, where a fresh database is created for the
run and dropped after it.

Hookyard runs as a user runs it: `hookyard serve` with no --roles (every role in one
process, with the child processes it starts), no config file (so auth is on), and either
the default store (SQLite, data/hookyard.db in its own folder: target `sqlite`) or
`--store postgresql://...` (target `postgres`). Its rules fire on three named hooks:
`bench` and `bench-latency` run `core.noop`, `bench-shell` runs `core.local cmd=true`.
Senders post with the API key a user would give a sender: made by `hookyard apikey
create --role webhook --webhook ...` before the first start, limited to those hooks.
Beside it in the same run:
  bare     bench/bare_server.py: aiohttp parses the JSON and answers 202 (the ceiling)
  webhook  adnanh/webhook with bench/webhook_hooks.json: its hook runs /bin/true and
           answers 202 without waiting for it (a second instance, with -verbose so that
           its finished runs can be counted in its log, serves scenario 4)

Scenarios, every round (a figure is the median over --repeat rounds; a ratio is the
median of the per-round ratios, both sides measured in the same round):
  1 ingest      wrk -t2 -c64 for --duration s against each target, the order rotating
                each round: accepted/s, non-2xx, ratio to bare and to webhook
  2 end to end  --webhooks posted to `bench` as fast as wrk can (plus the requests in
                flight when wrk stops, at most --connections; the table shows how many
                were stored): executions/s from the first post to the last
                `core.noop` execution's finished_at; then as many again, and wrk for
                --duration s while that backlog drains: the ingest rate then, and its
                ratio to bare's in scenario 1
  3 latency     --rate webhooks/s for --rate-seconds s from a paced aiohttp client to
                `bench-latency`; per webhook, its trigger instance's occurrence_time to
                its execution's started_at: p50, p99
  4 shell       --shell-webhooks to `bench-shell` (`core.local cmd=true`), first post to
                last execution finished, against webhook running /bin/true for as many,
                first post to its last "finished handling" log line
  5 idle RSS    after start-up (and --settle s), VmRSS summed over each target's process
                tree; measured once
Hookyard's figures are read from its store directly (not through the server under
test). Between two measurements the driver waits until the target has no work left.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from bench_ingest import HOOKS_FILE, wait_quiet
from harness import (
    BENCH_DIR,
    REPO,
    Run,
    Target,
    add_common_arguments,
    as_datetime,
    bench_session,
    free_port,
    parse_arguments,
    pg_database_url,
    process_tree,
    rss_kib,
    run_wrk,
    start,
    store_rows,
)
from pipeline_report import Figures, fmt, fragment, percentile

TARGET_NAMES = ("bare", "webhook", "sqlite", "postgres")
NOOP_HOOK, LATENCY_HOOK, SHELL_HOOK = "bench", "bench-latency", "bench-shell"

RULES = {
    NOOP_HOOK: "action:\n  ref: core.noop\n",
    LATENCY_HOOK: "action:\n  ref: core.noop\n",
    SHELL_HOOK: 'action:\n  ref: core.local\n  parameters:\n    cmd: "true"\n',
}

# Work not finished yet: trigger instances the rules worker has not decided, executions
# not ended.
ACTIVE_QUERY = (
    "SELECT (SELECT count(*) FROM trigger_instances WHERE status IN ('pending', 'processing'))"
    " + (SELECT count(*) FROM executions"
    " WHERE status IN ('requested', 'scheduled', 'running', 'canceling'))"
)


@dataclass
class Hookyard:
    target: Target
    key: str
    # Waits that ended at --drain-limit with work still active: figures measured after
    # one of them are not of finished work, and the results say so.
    unfinished: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"St2-Api-Key": self.key}

    def url(self, hook: str) -> str:
        return f"{self.target.url.rsplit('/', 1)[0]}/{hook}"


def write_rules(folder: Path) -> None:
    folder.mkdir()
    for hook, action in RULES.items():
        rule = f"---\nname: {hook.replace('-', '_')}\npack: bench\n"
        rule += f"trigger:\n  type: core.st2.webhook\n  parameters:\n    url: {hook}\n"
        (folder / f"{hook}.yaml").write_text(rule + action)


def hookyard_target(name: str, port: int, workdir: Path, store: str | None) -> Target:
    """`hookyard serve` in a folder of its own; with no --store, its default SQLite file."""
    folder = workdir / name
    folder.mkdir()
    command = [sys.executable, "-m", "engine", "serve", "--port", str(port)]
    command += ["--rules", str(workdir / "rules")]
    if store:
        command += ["--store", store]
    database = store or f"sqlite:///{folder / 'data' / 'hookyard.db'}"
    url = f"http://127.0.0.1:{port}/webhooks/{NOOP_HOOK}"
    # The engine package is imported from this checkout, whatever the current folder.
    env = {"PYTHONPATH": str(REPO)}
    return Target(name, url, command, folder, "/ready", database, env)


def create_sender_key(target: Target, store: str | None) -> str:
    """What a user gives a sender: a key of role webhook, limited to the hooks it posts."""
    command = [sys.executable, "-m", "engine", "apikey", "create", "bench-sender"]
    command += ["--role", "webhook"]
    for hook in RULES:
        command += ["--webhook", hook]
    if store:
        command += ["--store", store]
    out = subprocess.run(
        command,
        cwd=target.cwd,
        env={**os.environ, **target.env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()[-1]


def webhook_target(name: str, port: int, workdir: Path, args: argparse.Namespace) -> Target:
    command = [args.webhook, "-hooks", str(HOOKS_FILE), "-ip", "127.0.0.1"]
    command += ["-port", str(port), "-http-methods", "POST"]
    if name == "webhook-shell":
        command.append("-verbose")
    return Target(name, f"http://127.0.0.1:{port}/hooks/bench", command, workdir)


def active_work(database: str) -> int:
    return int(store_rows(database, ACTIVE_QUERY)[0][0])


def wait_drained(hookyard: Hookyard, limit_seconds: float) -> float:
    """Seconds until every webhook is decided and every execution ended. Bounded."""
    started = time.monotonic()
    while active_work(hookyard.target.database):
        if time.monotonic() - started > limit_seconds:
            note = f"{hookyard.target.name}: work still active after {limit_seconds:g}s"
            print(f"  {note}", flush=True)
            hookyard.unfinished.append(note)
            break
        time.sleep(0.2)
    return time.monotonic() - started


def idle_rss(target: Target) -> tuple[int, float]:
    """Processes in the target's tree and their summed VmRSS in MiB."""
    tree = process_tree(target.process.pid)
    return len(tree), sum(rss_kib(pid) for pid in tree) / 1024


@dataclass
class Drained:
    """Webhooks posted to a hook, and what their executions came to."""

    posted: Run
    stored: int
    succeeded: int
    not_succeeded: int
    per_second: float


def post_and_execute(
    hookyard: Hookyard, args: argparse.Namespace, hook: str, action: str, count: int
) -> Drained:
    """Post `count` webhooks as fast as wrk can, wait until their executions ended, and
    rate the executions from the first post to the last one's finished_at."""
    database = hookyard.target.database
    started = datetime.now(UTC)
    posted = run_wrk(hookyard.url(hook), args, args.drain_limit, hookyard.headers, count)
    wait_drained(hookyard, args.drain_limit)
    stored = store_rows(
        database,
        "SELECT count(*) FROM trigger_instances WHERE webhook = ? AND occurrence_time >= ?",
        hook,
        started,
    )[0][0]
    succeeded, ended, last = store_rows(
        database,
        "SELECT sum(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END), count(*),"
        " max(finished_at) FROM executions WHERE action = ? AND created_at >= ?",
        action,
        started,
    )[0]
    succeeded = int(succeeded or 0)
    seconds = (as_datetime(last) - started).total_seconds() if last else math.inf
    return Drained(posted, stored, succeeded, ended - succeeded, succeeded / seconds)


def ingest_while_draining(hookyard: Hookyard, args: argparse.Namespace) -> tuple[Run, int, int]:
    """--webhooks posted to make a backlog, then wrk for --duration s while it drains.
    Returns that run and the work still active at its start and at its end."""
    url = hookyard.url(NOOP_HOOK)
    run_wrk(url, args, args.drain_limit, hookyard.headers, args.webhooks)
    before = active_work(hookyard.target.database)
    run = run_wrk(url, args, args.duration, hookyard.headers)
    after = active_work(hookyard.target.database)
    wait_drained(hookyard, args.drain_limit)
    return run, before, after


async def post_at_rate(
    url: str, headers: dict[str, str], rate: float, seconds: float, connections: int
) -> tuple[list[str], int, float]:
    """Post at a steady `rate` for `seconds`: each request is started at its time,
    whether the ones before it were answered or not (it may then wait for one of the
    `connections`). Returns the accepted trigger instance ids, the failures, and the
    rate at which requests were started."""
    body = json.dumps({"ref": "refs/heads/main", "repository": {"full_name": "acme/api"}})
    accepted: list[str] = []
    failures = 0

    async def post(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        try:
            async with session.post(url, data=body, headers=headers) as response:
                if 200 <= response.status < 300:
                    accepted.append((await response.json())["id"])
                else:
                    failures += 1
        except aiohttp.ClientError:
            failures += 1

    headers = {**headers, "Content-Type": "application/json"}
    total = round(rate * seconds)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        tasks = []
        started = loop.time()
        for index in range(total):
            delay = started + index / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(session)))
        sending = loop.time() - started
        await asyncio.gather(*tasks)
    return accepted, failures, (total - 1) / sending if sending else math.inf


def measure_latency(
    hookyard: Hookyard, args: argparse.Namespace
) -> tuple[list[float], int, int, float]:
    """Webhook to action start in ms for each accepted webhook of a paced run, with the
    failed posts, the accepted webhooks without an execution, and the rate sent."""
    started = datetime.now(UTC)
    url = hookyard.url(LATENCY_HOOK)
    ids, failures, sent_rate = asyncio.run(
        post_at_rate(url, hookyard.headers, args.rate, args.rate_seconds, args.connections)
    )
    wait_drained(hookyard, args.drain_limit)
    rows = store_rows(
        hookyard.target.database,
        "SELECT t.id, t.occurrence_time, e.started_at FROM trigger_instances t"
        " JOIN executions e ON e.trigger_instance_id = t.id"
        " WHERE t.webhook = ? AND t.occurrence_time >= ? AND e.started_at IS NOT NULL",
        LATENCY_HOOK,
        started,
    )
    wanted = set(ids)
    delays = [
        (as_datetime(begun) - as_datetime(occurred)).total_seconds() * 1000
        for instance, occurred, begun in rows
        if instance in wanted
    ]
    return delays, failures, len(wanted) - len(delays), sent_rate


class LogCounter:
    """Counts a marker in a growing log file, reading only what was added."""

    def __init__(self, path: Path, marker: bytes) -> None:
        self.path, self.marker = path, marker
        self.offset, self.partial, self.count = 0, b"", 0

    def update(self) -> int:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            added = log.read()
        self.offset += len(added)
        complete, _, self.partial = (self.partial + added).rpartition(b"\n")
        self.count += complete.count(self.marker)
        return self.count


def webhook_runs(
    target: Target, counter: LogCounter, args: argparse.Namespace, count: int
) -> tuple[Run, int, float]:
    """Post `count` webhooks to adnanh/webhook and rate its /bin/true runs, first post to
    the last run's "finished handling" (polled every 20 ms)."""
    before = counter.update()
    started = time.monotonic()
    posted = run_wrk(target.url, args, args.drain_limit, None, count)
    expected = before + posted.accepted
    seen, last_change = counter.update(), time.monotonic()
    # Requests in flight when wrk stopped are run too: wait for the count to settle.
    while time.monotonic() - last_change < 1.0 or seen < expected:
        if time.monotonic() - started > args.drain_limit:
            print(f"  {target.name}: {expected - seen} runs missing after {args.drain_limit:g}s")
            break
        time.sleep(0.02)
        now = counter.update()
        if now != seen:
            seen, last_change = now, time.monotonic()
    runs = seen - before
    return posted, runs, runs / (last_change - started)


class Pipeline:
    """The run's targets, started side by side, and the figures they gave."""

    def __init__(self, args: argparse.Namespace, names: list[str], workdir: Path) -> None:
        self.args, self.names, self.workdir = args, names, workdir
        self.targets: dict[str, Target] = {}
        self.hookyards: dict[str, Hookyard] = {}
        self.figures = Figures()
        self.shell_counter: LogCounter | None = None

    def start_all(self, started: list[Target]) -> None:
        """Start every target (into `started`, which the session stops), each measured
        idle --settle s after it is ready."""
        args = self.args
        write_rules(self.workdir / "rules")
        pg_store = pg_database_url(args.pg_admin_url, args.pg_database)
        for name in [*self.names, *(["webhook-shell"] if "webhook" in self.names else [])]:
            port = free_port()
            if name == "bare":
                server = [sys.executable, str(BENCH_DIR / "bare_server.py"), "--port", str(port)]
                url = f"http://127.0.0.1:{port}/webhooks/{NOOP_HOOK}"
                target = Target(name, url, server, self.workdir, "/health")
            elif name.startswith("webhook"):
                target = webhook_target(name, port, self.workdir, args)
            else:
                store = pg_store if name == "postgres" else None
                target = hookyard_target(name, port, self.workdir, store)
                self.hookyards[name] = Hookyard(target, create_sender_key(target, store))
            started.append(target)
            start(target, port, self.workdir)
            self.targets[name] = target
            time.sleep(args.settle)
            processes, rss = idle_rss(target)
            self.figures.add("processes", name, processes)
            self.figures.add("rss", name, rss)
            print(f"started {name}: {processes} processes, idle RSS {rss:,.1f} MiB", flush=True)
        if "webhook-shell" in self.targets:
            log = self.targets["webhook-shell"].log_path
            self.shell_counter = LogCounter(log, b"finished handling")

    def settle(self, name: str) -> None:
        if name in self.hookyards:
            wait_drained(self.hookyards[name], self.args.drain_limit)
        else:
            wait_quiet(self.targets[name], self.args.drain_limit)

    def headers(self, name: str) -> dict[str, str] | None:
        return self.hookyards[name].headers if name in self.hookyards else None

    def warm_up(self) -> None:
        for name in self.names:
            run_wrk(self.targets[name].url, self.args, self.args.warmup, self.headers(name))
            self.settle(name)

    def measure_round(self, index: int) -> None:
        label = f"round {index + 1}"
        shift = index % len(self.names)
        for name in self.names[shift:] + self.names[:shift]:
            self.ingest(label, name)
        for name in self.hookyards:
            self.end_to_end(label, name)
            self.latency(label, name)
            self.shell(label, name)
        if self.shell_counter is not None:
            webhook = self.targets["webhook-shell"]
            _, runs, rate = webhook_runs(
                webhook, self.shell_counter, self.args, self.args.shell_webhooks
            )
            self.figures.add("shell_runs", "webhook", runs)
            self.figures.add("shell_rate", "webhook", rate)
            print(f"{label} shell    webhook   {runs:,} runs  {rate:,.0f}/s", flush=True)

    def ingest(self, label: str, name: str) -> None:
        run = run_wrk(self.targets[name].url, self.args, self.args.duration, self.headers(name))
        socket_errors = run.errors - run.non_2xx
        self.figures.add("ingest", name, run.accepted_per_second)
        self.figures.add("ingest_non2xx", name, run.non_2xx)
        self.figures.add("ingest_errors", name, socket_errors)
        print(
            f"{label} ingest   {name:9s} {run.accepted_per_second:9,.0f}/s"
            f"  non-2xx {run.non_2xx}  socket errors {socket_errors}",
            flush=True,
        )
        self.settle(name)

    def end_to_end(self, label: str, name: str) -> None:
        hookyard, add = self.hookyards[name], self.figures.add
        done = post_and_execute(hookyard, self.args, NOOP_HOOK, "core.noop", self.args.webhooks)
        add("e2e_posted", name, done.posted.accepted_per_second)
        add("e2e_stored", name, done.stored)
        add("e2e_succeeded", name, done.succeeded)
        add("e2e_failed", name, done.not_succeeded)
        add("e2e_rate", name, done.per_second)
        run, before, after = ingest_while_draining(hookyard, self.args)
        add("draining", name, run.accepted_per_second)
        add("backlog_start", name, before)
        add("backlog_end", name, after)
        print(
            f"{label} e2e      {name:9s} posted {done.posted.accepted_per_second:,.0f}/s"
            f"  {done.succeeded:,} of {done.stored:,} succeeded ({done.not_succeeded} not)"
            f"  {done.per_second:,.0f} executions/s; ingest while draining"
            f" {run.accepted_per_second:,.0f}/s (backlog {before:,} → {after:,})",
            flush=True,
        )

    def latency(self, label: str, name: str) -> None:
        delays, failed, missing, sent = measure_latency(self.hookyards[name], self.args)
        self.figures.add("sent_rate", name, sent)
        self.figures.add("rate_failed", name, failed)
        self.figures.add("rate_missing", name, missing)
        p50 = p99 = None
        if delays:
            p50, p99 = percentile(delays, 50), percentile(delays, 99)
            self.figures.add("p50", name, p50)
            self.figures.add("p99", name, p99)
            self.figures.add("max", name, max(delays))
        print(
            f"{label} latency  {name:9s} sent {sent:,.0f}/s  p50 {fmt(p50, ',.1f')} ms"
            f"  p99 {fmt(p99, ',.1f')} ms  failed {failed}  without execution {missing}",
            flush=True,
        )

    def shell(self, label: str, name: str) -> None:
        shell = post_and_execute(
            self.hookyards[name], self.args, SHELL_HOOK, "core.local", self.args.shell_webhooks
        )
        self.figures.add("shell_runs", name, shell.succeeded)
        self.figures.add("shell_rate", name, shell.per_second)
        print(
            f"{label} shell    {name:9s} {shell.succeeded:,} of {shell.stored:,}"
            f" succeeded ({shell.not_succeeded} not)  {shell.per_second:,.0f}/s",
            flush=True,
        )


def require(program: str, path: str) -> None:
    if not shutil.which(path):
        raise SystemExit(
            f"{program} not found ({path}); on Debian or Ubuntu: apt-get install -y wrk webhook"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of each wrk run")
    parser.add_argument("--webhooks", type=int, default=20_000, help="end to end: webhooks")
    parser.add_argument("--rate", type=float, default=1000.0, help="latency: webhooks/s")
    parser.add_argument("--rate-seconds", type=float, default=5.0, help="latency: seconds")
    parser.add_argument("--shell-webhooks", type=int, default=2000, help="shell: webhooks")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before idle RSS")
    parser.add_argument("--drain-limit", type=float, default=300.0, help="max wait for work")
    parser.add_argument("--markdown", type=Path, help="write the results here as markdown")
    add_common_arguments(parser, TARGET_NAMES, "hookyard_pipeline")
    args = parse_arguments(parser, TARGET_NAMES)
    names = [name for name in TARGET_NAMES if name in args.targets]
    require("wrk", args.wrk)
    if "webhook" in names:
        require("webhook (adnanh/webhook)", args.webhook)
    command = "python bench/bench_pipeline.py " + " ".join(sys.argv[1:])

    with bench_session(args, "hookyard-pipeline-", "postgres" in names) as (workdir, started):
        pipeline = Pipeline(args, names, workdir)
        pipeline.start_all(started)
        pipeline.warm_up()
        for round_index in range(args.repeat):
            pipeline.measure_round(round_index)
        hookyard_names = list(pipeline.hookyards)
        unfinished = [n for h in pipeline.hookyards.values() for n in h.unfinished]
        result = fragment(pipeline.figures, names, hookyard_names, args, command, unfinished)
        print()
        print(result)
        if args.markdown:
            args.markdown.write_text(result)
            print(f"markdown written to {args.markdown}")


if __name__ == "__main__":
    main()
