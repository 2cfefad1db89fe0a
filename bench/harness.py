"""What the benchmarks in bench/ share: their targets' processes, wrk, the store, /proc.

Imported by the drivers (bench_ingest.py, bench_pipeline.py), which run as scripts from
any folder: Python puts bench/ itself first on the import path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
LUA_SCRIPT = BENCH_DIR / "post_json.lua"


@dataclass
class Run:
    accepted_per_second: float
    p50_ms: float
    p99_ms: float
    accepted: int
    errors: int
    non_2xx: int
    # CPU µs per accepted webhook of the server process, its other processes, the
    # database server and wrk, measured over the run (see cpu_snapshot).
    cpu: dict[str, float] = field(default_factory=dict)


@dataclass
class Target:
    name: str
    url: str
    command: list[str]
    cwd: Path
    ready_path: str | None = None
    database: str | None = None  # Hookyard only: to wait for the backlog and count rows
    env: dict[str, str] = field(default_factory=dict)
    # Started beside the target and stopped with it (Hookyard's rules process).
    helpers: list[list[str]] = field(default_factory=list)
    helper_processes: list[subprocess.Popen] = field(default_factory=list)
    # Run only while the driver waits for the backlog (topology "ingest").
    drainer: list[str] | None = None
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    runs: list[Run] = field(default_factory=list)
    accepted_total: int = 0
    drain_seconds: list[float] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def wait_ready(target: Target, port: int, deadline_seconds: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if target.process is not None and target.process.poll() is not None:
            raise SystemExit(f"{target.name} exited early; see {target.log_path}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
            if target.ready_path is None:
                return
            status, _, _ = http_get(f"http://127.0.0.1:{port}{target.ready_path}")
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{target.name} not ready after {deadline_seconds:g}s; see {target.log_path}")


def start(target: Target, port: int, workdir: Path) -> None:
    target.log_path = workdir / f"{target.name}.log"
    with target.log_path.open("wb") as log:
        target.process = subprocess.Popen(
            target.command,
            cwd=target.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **target.env},
            start_new_session=True,
        )
    wait_ready(target, port)
    for index, command in enumerate(target.helpers):
        with (workdir / f"{target.name}-helper{index}.log").open("wb") as log:
            target.helper_processes.append(
                subprocess.Popen(
                    command,
                    cwd=target.cwd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **target.env},
                    start_new_session=True,
                )
            )


def stop(target: Target) -> None:
    for process in [*target.helper_processes, target.process]:
        if process is not None:
            terminate(process)


def terminate(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_wrk(
    url: str,
    args: argparse.Namespace,
    seconds: float,
    headers: dict[str, str] | None = None,
    requests: int | None = None,
) -> Run:
    """wrk with bench/post_json.lua for `seconds` (whole seconds: all wrk takes), or, given
    `requests`, until each thread has had its share of them answered (`seconds` then
    bounds the run). Requests still in flight when a thread stops are not counted,
    though the server may accept them."""
    command = [args.wrk, f"-t{args.threads}", f"-c{args.connections}"]
    command += [f"-d{max(1, math.ceil(seconds))}s", "--timeout", "10s", "--latency"]
    command += ["-s", str(LUA_SCRIPT)]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    command.append(url)
    if requests is None:
        out = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=True
        )
        return _wrk_run(out.stdout, None)
    per_thread = -(-requests // args.threads)
    env = {**os.environ, "BENCH_REQUESTS_PER_THREAD": str(per_thread)}
    started = time.monotonic()
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as wrk:
        # wrk's main thread sleeps for the whole -d whatever its threads do; each thread
        # says when it has its share, and SIGINT then ends wrk with its summary.
        stopped = 0
        for line in wrk.stdout:
            if line.startswith("STOPPED"):
                stopped += 1
                if stopped == args.threads:
                    elapsed = time.monotonic() - started
                    wrk.send_signal(signal.SIGINT)
                    break
        else:
            elapsed = time.monotonic() - started
        rest = wrk.stdout.read()
    if wrk.returncode:
        raise subprocess.CalledProcessError(wrk.returncode, command)
    return _wrk_run(rest, elapsed)


def _wrk_run(stdout: str, elapsed: float | None) -> Run:
    """The figures of post_json.lua's BENCH line; `elapsed` replaces wrk's duration."""
    line = next(row for row in stdout.splitlines() if row.startswith("BENCH "))
    data = json.loads(line.removeprefix("BENCH "))
    socket_errors = (
        data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["timeouts"]
    )
    accepted = data["requests"] - data["status_errors"]
    seconds = elapsed if elapsed is not None else data["duration_us"] / 1e6
    return Run(
        accepted_per_second=accepted / seconds,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        accepted=accepted,
        errors=socket_errors + data["status_errors"],
        non_2xx=data["status_errors"],
    )


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its reaped children (webhook's /bin/true runs)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    try:
        listed = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in listed.split()]


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, found by parent id (a child started from another
    thread is not in /proc/<pid>/task/<pid>/children)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def rss_kib(pid: int) -> int:
    """Resident memory of one process (VmRSS), 0 once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def sqlite_time(moment: datetime) -> str:
    """A moment as Hookyard's SQLite schema writes it (fixed-width UTC text, so that text
    order is time order and comparisons work on the column)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def as_datetime(value: str | datetime | None) -> datetime | None:
    """A timestamp read from either store as an aware datetime."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def store_rows(database: str, query: str, *params: object) -> list[tuple]:
    """Rows of a query on Hookyard's store, read from the database itself, not through
    the server under test. `query` uses ? placeholders; datetimes may be passed."""
    if database.startswith("sqlite:///"):
        values = [sqlite_time(p) if isinstance(p, datetime) else p for p in params]
        conn = sqlite3.connect(database.removeprefix("sqlite:///"), timeout=30)
        try:
            return conn.execute(query, values).fetchall()
        finally:
            conn.close()
    parts = query.split("?")
    numbered = parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], 1))
    return asyncio.run(_pg_rows(database, numbered, params))


async def _pg_rows(url: str, query: str, params: tuple) -> list[tuple]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await conn.fetch(query, *params)]
    finally:
        await conn.close()


async def pg_admin(admin_url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def pg_database_url(admin_url: str, database: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{database}"


def add_common_arguments(
    parser: argparse.ArgumentParser, target_names: tuple[str, ...], pg_database: str
) -> None:
    """The options every driver takes: rounds, wrk, targets, PostgreSQL, the work folder."""
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per target")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; figures are medians")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument(
        "--targets",
        default=",".join(target_names),
        type=lambda value: [v.strip() for v in value.split(",") if v.strip()],
    )
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--pg-database", default=f"{pg_database}_{os.getpid()}")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and logs")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    parser.add_argument("--webhook", default=shutil.which("webhook") or "webhook")


def parse_arguments(parser: argparse.ArgumentParser, target_names: tuple[str, ...]):
    args = parser.parse_args()
    unknown = set(args.targets) - set(target_names)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; known: {', '.join(target_names)}")
    return args


@contextlib.contextmanager
def bench_session(
    args: argparse.Namespace, prefix: str, postgres: bool
) -> Iterator[tuple[Path, list[Target]]]:
    """A work folder, and with `postgres` a fresh database named --pg-database on
    --pg-admin-url. Yields the folder and a list to put the targets in: at the end they
    are stopped, the database is dropped and the folder removed (kept with --keep)."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    targets: list[Target] = []
    pg_created = False
    try:
        if postgres:
            asyncio.run(pg_admin(args.pg_admin_url, f'CREATE DATABASE "{args.pg_database}"'))
            pg_created = True
        yield workdir, targets
    finally:
        for target in targets:
            stop(target)
        if pg_created:
            asyncio.run(
                pg_admin(args.pg_admin_url, f'DROP DATABASE "{args.pg_database}" WITH (FORCE)')
            )
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
