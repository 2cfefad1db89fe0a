"""SQLite WAL checkpoints run beside the writer: committed rows reach the database file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from engine.config import StoreSettings
from engine.model.records import NewTriggerInstance
from engine.store import create_store


def rows_in_database_file(db: Path) -> int:
    # immutable=1 reads the main file only and ignores the WAL: what is counted here was
    # copied by a checkpoint.
    conn = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM trigger_instances").fetchone()[0]
    except sqlite3.DatabaseError:
        # Not even the schema has been copied yet; or ("database disk image is malformed")
        # a checkpoint was writing the pages this immutable read took as unchanging — a
        # torn read of this reader's own making, so the caller reads again.
        return 0
    finally:
        conn.close()


async def test_committed_rows_are_checkpointed_without_closing_the_store(tmp_path: Path) -> None:
    db = tmp_path / "hookyard.db"
    store = create_store(StoreSettings(url=f"sqlite:///{db}"), tmp_path)
    await store.open()
    try:
        items = [
            NewTriggerInstance(trigger="core.st2.webhook", payload={"i": i}) for i in range(20)
        ]
        await asyncio.gather(*(store.add_trigger_instance(item) for item in items))
        # A few rows are far below SQLite's automatic threshold: only the checkpointer
        # copies them into the database file while the store stays open.
        for _ in range(200):
            if rows_in_database_file(db) == len(items):
                break
            await asyncio.sleep(0.05)
        assert rows_in_database_file(db) == len(items)
    finally:
        await store.close()


async def test_the_wal_stays_bounded_under_a_steady_stream_of_commits(
    tmp_path: Path, monkeypatch
) -> None:
    """PASSIVE checkpoints alone never catch up with commits that keep coming, and the WAL
    is only rewound once one has: it grew without bound (1 GB after 30 s of webhooks)."""
    from engine.store import sqlite as sqlite_store
    from engine.store import sqlite_checkpoint

    monkeypatch.setattr(sqlite_checkpoint, "RESTART_AFTER_FRAMES", 256)  # 1 MiB
    monkeypatch.setattr(sqlite_store, "WAL_SIZE_LIMIT", 2 * 1024 * 1024)
    db = tmp_path / "hookyard.db"
    store = create_store(StoreSettings(url=f"sqlite:///{db}"), tmp_path)
    await store.open()
    wal = Path(f"{db}-wal")
    largest = 0
    try:
        body = "x" * 4000
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3.0
        written = 0
        while loop.time() < deadline:
            batch = [
                NewTriggerInstance(
                    trigger="core.st2.webhook", payload={"n": written + n, "b": body}
                )
                for n in range(50)
            ]
            await store.add_trigger_instances(batch)
            written += len(batch)
            largest = max(largest, wal.stat().st_size)
            await asyncio.sleep(0)  # the checkpointer's turn to be scheduled
        assert store._checkpoints.restarts >= 1
        # Without the RESTART checkpoints the WAL holds all that was written: it is never
        # rewound. With them it holds what comes in between two checkpoint rounds.
        assert largest < written * 4000 / 2, (written, largest)
    finally:
        await store.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM trigger_instances").fetchone()[0] == written
    finally:
        conn.close()
