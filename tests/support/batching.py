"""A plain in-memory `write_batch` standing in for a database in the group-commit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from engine.errors import StoreError
from engine.store.batching import GroupCommitter


async def submit(committer: GroupCommitter, item):
    """One caller of the committer, as a coroutine (a task can be made of it and cancelled)."""
    return await committer.enqueue(item)


class Table:
    """A write_batch that records each call; items starting with "bad" fail the call."""

    def __init__(self) -> None:
        self.rows: list[str] = []
        self.calls: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def write(self, items: Sequence[str]) -> list[str]:
        await self.gate.wait()
        self.calls.append(list(items))
        if any(item.startswith("bad") for item in items):
            raise StoreError(f"cannot write {items}")
        self.rows.extend(items)
        return [f"ok:{item}" for item in items]
