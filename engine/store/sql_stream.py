"""The stream methods of the store contract (engine.store.stream_base), written once over
a backend's dialect: a mixin of engine.store.sql_store.SqlStore, which supplies `_read`,
`_write`, `dialect` and `_wake`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from engine.errors import StoreError
from engine.model.records import utcnow
from engine.model.stream import FeedEntry, OutputChunk


class SqlStreamFeed:
    _read: Any
    _write: Any
    dialect: Any
    _wake: Any

    async def append_output(
        self, execution_id: str, action_ref: str, runner_ref: str, chunks: Sequence[OutputChunk]
    ) -> None:
        if not chunks:
            return
        # PostgreSQL text cannot hold NUL; both backends store the same text.
        chunks = [
            replace(chunk, data=chunk.data.replace("\x00", "\ufffd"))
            if "\x00" in chunk.data
            else chunk
            for chunk in chunks
        ]
        await self._write(
            self.dialect.append_output, execution_id, action_ref, runner_ref, chunks, utcnow()
        )
        self._wake("stream")

    async def list_output(
        self, execution_id: str, output_type: str | None = None
    ) -> list[OutputChunk]:
        return await self._read(self.dialect.list_output, execution_id, output_type)

    async def read_feed(self, after: int, limit: int) -> list[FeedEntry]:
        if after < 0 or limit < 1:
            raise StoreError(f"read_feed: after must be >= 0 and limit >= 1 ({after}, {limit})")
        return await self._read(self.dialect.read_feed, after, limit)

    async def feed_head(self) -> int:
        return await self._read(self.dialect.feed_head)

    async def trim_feed(self, keep: int) -> int:
        return await self._write(self.dialect.trim_feed, keep)
