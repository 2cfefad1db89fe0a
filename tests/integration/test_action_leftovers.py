"""Action process groups a dead worker left behind (issue 15 item 5), with real processes.

A "leftover" here is a real process group started by the test in its own session, as the
dead worker's action would have been, and recorded with a real execution in a real SQLite
store. The guard tests use the real guard process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.config import StoreSettings
from engine.errors import RunnerError
from engine.model.records import NewExecution
from engine.runners.group_guard import GroupGuard
from engine.runners.process import run_process
from engine.runners.process_identity import (
    ProcessRecord,
    group_alive,
    start_time,
    this_host,
)
from engine.store import create_store
from engine.workers.leftovers import ActionProcesses

pytestmark = pytest.mark.skipif(this_host() is None, reason="needs Linux /proc")


@pytest.fixture
async def store(tmp_path: Path):
    opened = create_store(StoreSettings(url=f"sqlite:///{tmp_path}/h.db"), tmp_path)
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
def groups():
    """Start process groups (leader + a background child) and kill them all at the end."""
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", "sleep 60 & exec sleep 61"], start_new_session=True
        )
        started.append(proc)
        deadline = time.monotonic() + 10
        while len(members(proc.pid)) < 2:  # the background sleep has started
            assert time.monotonic() < deadline, "the test group did not start"
            time.sleep(0.02)
        return proc

    yield start
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def members(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_bytes().rpartition(b")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != b"Z":
                found.append(int(entry.name))
    return found


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def record(pgid: int, *, worker_pid: int, worker_start: int | None, start: int | None = None):
    host = this_host()
    assert host is not None
    return ProcessRecord(
        host=host.hostname,
        boot_id=host.boot_id,
        pid_namespace=host.pid_namespace,
        pgid=pgid,
        start_time=start_time(pgid) if start is None else start,
        worker_pid=worker_pid,
        worker_start_time=worker_start,
    ).as_record()


async def running_execution(store, process: dict, lease: float = 30.0):
    """An execution whose (first) attempt runs and recorded `process`."""
    created = await store.create_execution(NewExecution("core.local", {"cmd": "true"}))
    [claimed] = await store.claim_executions(10, lease)
    await store.start_execution(created.id, claimed.lease_token)
    await store.record_execution_process(created.id, claimed.lease_token, process)
    return claimed


async def reclaimed(store, execution_id: str):
    await asyncio.sleep(0.3)  # the lease (0.2 s) runs out: the worker is presumed dead
    [again] = await store.claim_executions(10, 30, max_attempts=3)
    assert (again.id, again.attempt) == (execution_id, 2)
    return again


async def test_reclaim_kills_the_previous_attempts_group_and_waits_until_gone(store, groups):
    leftover = groups()
    me = (os.getpid(), start_time(os.getpid()))
    first = await running_execution(
        store, record(leftover.pid, worker_pid=me[0], worker_start=me[1]), lease=0.2
    )
    again = await reclaimed(store, first.id)

    processes = ActionProcesses(store)
    try:
        assert await processes.kill_left_over(again) is True
        assert members(leftover.pid) == []  # all gone before attempt 2 may start
    finally:
        await processes.close()


async def test_a_pid_whose_start_time_differs_is_never_killed(store, groups):
    reused = groups()  # the pid now names this process, not the recorded one
    stale = record(reused.pid, worker_pid=dead_pid(), worker_start=1, start=1)
    first = await running_execution(store, stale, lease=0.2)
    again = await reclaimed(store, first.id)

    processes = ActionProcesses(store)
    try:
        assert await processes.kill_left_over(again) is True
        assert await processes.sweep() == 0
        assert len(members(reused.pid)) == 2
    finally:
        await processes.close()


async def test_sweep_kills_only_groups_whose_worker_is_dead_on_this_host(store, groups):
    orphaned, owned, elsewhere = groups(), groups(), groups()
    me = (os.getpid(), start_time(os.getpid()))
    await running_execution(store, record(orphaned.pid, worker_pid=dead_pid(), worker_start=5))
    # A live worker's action (another serve on this host sharing the database): untouched.
    await running_execution(store, record(owned.pid, worker_pid=me[0], worker_start=me[1]))
    other_host = {**record(elsewhere.pid, worker_pid=dead_pid(), worker_start=5), "boot_id": "x"}
    await running_execution(store, other_host)

    processes = ActionProcesses(store)
    try:
        assert await processes.sweep() == 1
    finally:
        await processes.close()
    assert members(orphaned.pid) == []
    assert len(members(owned.pid)) == 2 and len(members(elsewhere.pid)) == 2


# --- the guard process ---------------------------------------------------------------------


def test_guard_kills_a_group_past_its_deadline_and_spares_released_ones(groups):
    late, released = groups(), groups()
    guard = GroupGuard(deadline_margin=0.2)
    try:
        guard.watch(late.pid, start_time(late.pid), timeout=0.3)
        guard.watch(released.pid, start_time(released.pid), timeout=0.3)
        guard.release(released.pid)
        deadline = time.monotonic() + 10
        while group_alive(late.pid):
            assert time.monotonic() < deadline, "the guard did not enforce the timeout"
            time.sleep(0.05)
    finally:
        guard.close()  # "the worker is gone": what is still watched is killed
    assert len(members(released.pid)) == 2


WORKER = """
import sys, time
from engine.runners.group_guard import GroupGuard
from engine.runners.process import run_process
from engine.runners.process_identity import start_time
guard = GroupGuard()
pgid = int(sys.argv[1])
guard.watch(pgid, start_time(pgid), timeout=600)
print("watching", flush=True)
time.sleep(600)
"""


def test_guard_kills_the_watched_groups_when_its_worker_is_killed(groups):
    action = groups()
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(action.pid)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout.readline().strip() == "watching"
        time.sleep(0.2)
        assert len(members(action.pid)) == 2
        worker.kill()
        worker.wait()
        deadline = time.monotonic() + 10
        while members(action.pid):
            assert time.monotonic() < deadline, "the group outlived its worker"
            time.sleep(0.05)
    finally:
        worker.kill()
        worker.wait()
        worker.stdout.close()


DIES_AT_START = """
import asyncio, os, sys
from engine.runners.process import run_process


class DiesWhenTold:
    def started(self, pgid, timeout):
        print(pgid, flush=True)
        os._exit(9)  # killed after the fork, before the guard could be told of the group

    def ended(self, pgid):
        pass


asyncio.run(
    run_process(
        ["/bin/sh", "-c", sys.argv[1]],
        env={"PATH": "/usr/bin:/bin"},
        timeout=30,
        max_output=1000,
        watch=DiesWhenTold(),
    )
)
"""


def test_an_action_started_by_a_worker_that_dies_at_once_never_runs(tmp_path: Path):
    marker = tmp_path / "marker"
    worker = subprocess.run(
        [sys.executable, "-c", DIES_AT_START, f"touch {marker}; sleep 30"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert worker.returncode == 9, worker.stderr
    pgid = int(worker.stdout.split()[0])
    deadline = time.monotonic() + 10
    while members(pgid):
        assert time.monotonic() < deadline, "the gated action outlived its worker"
        time.sleep(0.05)
    time.sleep(0.5)
    assert not marker.exists()


class Recording:
    """A process watch that remembers what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def started(self, pgid: int, timeout: float) -> None:
        self.events.append(("started", pgid))

    def ended(self, pgid: int) -> None:
        self.events.append(("ended", pgid))


async def test_a_watched_run_behind_the_gate_behaves_as_an_unwatched_one(tmp_path: Path):
    script = tmp_path / "tool"
    script.write_text('#!/bin/sh\necho "$0" "$@"; read -r line; echo "read:$line"; exit 4\n')
    script.chmod(0o755)
    outcomes = []
    for watch in (None, Recording()):
        outcomes.append(
            await run_process(
                ["./tool", "a b", "c"],
                env={"PATH": "/usr/bin:/bin"},
                cwd=str(tmp_path),
                timeout=10,
                max_output=1000,
                watch=watch,
            )
        )
    plain, watched = outcomes
    assert (watched.exit_code, watched.stdout) == (plain.exit_code, plain.stdout)
    assert watched.stdout == "./tool a b c\nread:\n" and watched.exit_code == 4
    assert watch.events == [("started", watch.events[0][1]), ("ended", watch.events[0][1])]

    with pytest.raises(RunnerError, match="cannot start 'no-such-program-hookyard'"):
        await run_process(
            ["no-such-program-hookyard"], env={}, timeout=10, max_output=10, watch=Recording()
        )
