"""SQLite WAL checkpoints run beside the writer: committed rows reach the database file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from engine.config import StoreSettings
from engine.model import NewTriggerInstance
from engine.store import create_store


def rows_in_database_file(db: Path) -> int:
    # immutable=1 reads the main file only and ignores the WAL: what is counted here was
    # copied by a checkpoint.
    conn = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM trigger_instances").fetchone()[0]
    except sqlite3.OperationalError:  # not even the schema has been copied yet
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
