"""The stream part of the store protocol: the change feed behind /api/v1/stream and the
live output of running actions (engine.model.stream, engine.store.ops.stream).

Feed entries are not written through this interface, except output: the store writes
them itself in the transaction of the change they report (an execution created or
updated, a trigger instance stored).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from engine.model.stream import FeedEntry, OutputChunk


class StreamStore(abc.ABC):
    @abc.abstractmethod
    async def append_output(
        self, execution_id: str, action_ref: str, runner_ref: str, chunks: Sequence[OutputChunk]
    ) -> None:
        """Store pieces of a running action's output, with their feed entries."""

    @abc.abstractmethod
    async def list_output(
        self, execution_id: str, output_type: str | None = None
    ) -> list[OutputChunk]:
        """An execution's stored output in the order it was written (one pipe's only
        when `output_type` is given)."""

    @abc.abstractmethod
    async def read_feed(self, after: int, limit: int) -> list[FeedEntry]:
        """Up to `limit` feed entries with `seq` > `after`, by seq, with the executions
        and trigger instances they reference."""

    @abc.abstractmethod
    async def feed_head(self) -> int:
        """The highest `seq` written so far (0 when the feed is empty)."""

    @abc.abstractmethod
    async def trim_feed(self, keep: int) -> int:
        """Delete all but the newest `keep` entries' range; returns how many went."""
