"""Durability: a process killed with SIGKILL loses no trigger instance whose add returned."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from engine.config import StoreSettings
from engine.store import create_store

REPO_ROOT = Path(__file__).resolve().parents[2]

# Eight concurrent producers, so group commit has batches in flight when the kill lands.
PRODUCER = """
import asyncio, sys
from pathlib import Path
from engine.config import StoreSettings
from engine.model.records import NewTriggerInstance
from engine.store import create_store

async def main():
    store = create_store(StoreSettings(url="sqlite:///" + sys.argv[1]), Path("."))
    await store.open()

    async def produce(worker):
        n = 0
        while True:
            item = NewTriggerInstance("crash.test", {"worker": worker, "n": n})
            accepted = await store.add_trigger_instance(item)
            print(accepted.id, flush=True)
            n += 1

    await asyncio.gather(*(produce(w) for w in range(8)))

asyncio.run(main())
"""

ACKNOWLEDGED_BEFORE_KILL = 400


@pytest.mark.slow
async def test_sigkill_mid_stream_loses_no_acknowledged_instance(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PRODUCER,
        str(db),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    acknowledged: list[str] = []
    try:
        assert process.stdout is not None
        while len(acknowledged) < ACKNOWLEDGED_BEFORE_KILL:
            line = await asyncio.wait_for(process.stdout.readline(), 20)
            if not line:
                stderr = await process.stderr.read() if process.stderr else b""
                pytest.fail(f"producer exited early: {stderr.decode(errors='replace')}")
            acknowledged.append(line.decode().strip())
        process.send_signal(signal.SIGKILL)
        rest, _ = await asyncio.wait_for(process.communicate(), 20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
    # Lines printed before the kill count too; a torn last line was never acknowledged.
    text = rest.decode()
    complete = text if text.endswith("\n") else text.rpartition("\n")[0]
    acknowledged += [line for line in complete.splitlines() if line]
    assert process.returncode == -signal.SIGKILL

    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []

    store = create_store(StoreSettings(url=f"sqlite:///{db}"), tmp_path)
    await store.open()
    try:
        for instance_id in acknowledged:
            stored = await store.get_trigger_instance(instance_id)
            assert stored.status == "pending"
            assert set(stored.payload) == {"worker", "n"}
        page = await store.list_trigger_instances({}, 10, 0)
        # Rows committed but not yet printed may exist; acknowledged ones are a subset.
        assert page.total >= len(set(acknowledged)) == len(acknowledged)
        # Each producer's sequence is gap-free up to its last stored item: no torn batch.
        rows = await store.list_trigger_instances({"trigger": "crash.test"}, page.total, 0)
        by_worker: dict[int, list[int]] = {}
        for item in rows.items:
            by_worker.setdefault(item.payload["worker"], []).append(item.payload["n"])
        for numbers in by_worker.values():
            assert sorted(numbers) == list(range(len(numbers)))
    finally:
        await store.close()
