"""kill -9 of `hookyard serve` while a shell action runs (issue 15 item 5).

The action's process group dies with its worker (the worker's group guard kills it), the
first attempt's side effect never happens, and after a restart attempt 2 runs alone. The
group is read back from the execution row the worker recorded (pid, group, start time).
On PostgreSQL, a second serve starting on the same host leaves the first one's running
action alone, and takes it over (attempt 2) once the first is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import urllib.request
from pathlib import Path

import asyncpg
import pytest

from tests.support.processes import alive
from tests.support.waiting import wait_for, wait_until

# The lease is short so that the restarted worker re-claims the execution soon.
ACTION_SECONDS = 20
LEASE = {"HOOKYARD_WORKERS__LEASE_SECONDS": "3", "HOOKYARD_WORKERS__MAX_ATTEMPTS": "3"}


def create_execution(url: str, cmd: str) -> str:
    request = urllib.request.Request(
        url + "/api/v1/executions",
        data=json.dumps({"action": "core.local", "parameters": {"cmd": cmd}}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["id"]


def get_execution(url: str, execution_id: str) -> dict:
    with urllib.request.urlopen(f"{url}/api/v1/executions/{execution_id}", timeout=10) as r:
        return json.load(r)


def recorded_process(db: Path, execution_id: str) -> dict | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT process FROM executions WHERE id = ?", (execution_id,)
        ).fetchone()
    return json.loads(row[0]) if row and row[0] else None


def action_group(text: str) -> int | None:
    """The process group of the process whose command line contains `text`."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if text.encode() not in Path(f"/proc/{entry}/cmdline").read_bytes():
                continue
            return int(Path(f"/proc/{entry}/stat").read_bytes().rpartition(b")")[2].split()[2])
        except OSError:
            continue
    return None


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_bytes().rpartition(b")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(entry))
    return members


@pytest.mark.timeout(150)
def test_kill_9_kills_the_action_group_and_attempt_2_runs_alone(serve, tmp_path: Path) -> None:
    db = tmp_path / "hookyard.db"
    counter = tmp_path / "counter"
    # The side effect: "done" once the sleep is over. Had the first attempt survived the
    # kill, its "done" would come before attempt 2 (which starts later) finishes.
    cmd = f"echo start >> {counter}; sleep {ACTION_SECONDS}; echo done >> {counter}"
    first = serve.start(roles="api,actions", env=LEASE)
    execution_id = create_execution(first.url, cmd)
    pgid = wait_for(lambda: action_group(str(counter)), "the action's shell to run", 20)
    # `sh -c` with two commands forks `sleep`: the group has a grandchild.
    wait_for(lambda: len(group_members(pgid)) >= 2, "sh and its sleep in the group", 10)
    first_pid = first.proc.pid

    assert first.kill() == -9
    wait_for(lambda: not group_members(pgid), "the action's group to be gone", 10)
    assert not alive(pgid)
    assert counter.read_text().splitlines() == ["start"]
    # What a restarted worker would need to find the group again, had the guard missed it.
    process = recorded_process(db, execution_id)
    assert process is not None and process["pgid"] == pgid
    assert process["start_time"] and process["boot_id"] and process["worker_pid"] == first_pid

    # Attempt 2 after a restart: starts once the lease ran out, alone, and finishes.
    second = serve.start(roles="api,actions", env=LEASE)
    done = wait_for(
        lambda: (e := get_execution(second.url, execution_id))["status"] == "succeeded" and e,
        "attempt 2 to succeed",
        ACTION_SECONDS + 40,
    )
    assert counter.read_text().splitlines() == ["start", "start", "done"]
    assert [entry["status"] for entry in done["log"]].count("running") == 2


async def pg_process(url: str, execution_id: str) -> dict | None:
    conn = await asyncpg.connect(url)
    try:
        text = await conn.fetchval(
            "SELECT process::text FROM executions WHERE id = $1", execution_id
        )
    finally:
        await conn.close()
    return json.loads(text) if text else None


@pytest.mark.timeout(150)
async def test_postgres_a_second_serve_on_the_host_spares_a_live_workers_action(
    pg_database, serve, tmp_path: Path
) -> None:
    counter = tmp_path / "counter"
    cmd = f"echo start >> {counter}; sleep {ACTION_SECONDS}; echo done >> {counter}"
    a = serve.start(store=pg_database, roles="api,actions", env=LEASE, name="a")
    execution_id = create_execution(a.url, cmd)
    process = await wait_until(
        lambda: pg_process(pg_database, execution_id), "A's action", 20, every=0.1
    )
    assert process["worker_pid"] == a.proc.pid
    pgid = process["pgid"]

    # B starts on the same host: its start-up sweep must leave A's live action running.
    b = serve.start(store=pg_database, roles="api,actions", env=LEASE, name="b")
    await asyncio.sleep(2)
    assert len(group_members(pgid)) >= 2
    assert counter.read_text().splitlines() == ["start"]

    assert a.kill() == -9

    async def group_gone():
        return not group_members(pgid)

    async def succeeded_on_b():
        execution = get_execution(b.url, execution_id)
        return execution if execution["status"] == "succeeded" else None

    await wait_until(group_gone, "A's group to be gone", 10, every=0.1)
    done = await wait_until(
        succeeded_on_b, "attempt 2 on B to succeed", ACTION_SECONDS + 40, every=0.1
    )
    assert done["attempt"] == 2
    assert counter.read_text().splitlines() == ["start", "start", "done"]
