"""A cheap, approximate count of pending trigger instances for load shedding.

Counting pending rows on every webhook request would cost more than storing it, so the
count is taken at most every `refresh_seconds` and adjusted in between by what this
process itself adds and claims. Other processes' changes show up at the next refresh.

The refresh is single-flight: the request that finds the count stale starts one count
and waits for it; requests arriving meanwhile use the last value instead of starting
counts of their own (which, under load, took the database connections away from the
writes they were meant to protect). Only when there is no trustworthy value yet — the
first read, or after `forget()` — does everyone wait for the running count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class BacklogGauge:
    def __init__(self, count: Callable[[], Awaitable[int]], refresh_seconds: float = 1.0) -> None:
        self._count = count
        self._refresh_seconds = refresh_seconds
        self._value = 0
        self._taken_at: float | None = None
        # False until a count has succeeded, and again after forget().
        self._trusted = False
        self._refresh: asyncio.Future[None] | None = None

    async def value(self) -> int:
        refresh = self._refresh
        if refresh is None and self._due():
            refresh = self._refresh = asyncio.ensure_future(self._recount())
            # Retrieved even if every waiter is cancelled (no "never retrieved" report).
            refresh.add_done_callback(_consume)
            await asyncio.shield(refresh)
        elif refresh is not None and not self._trusted:
            await asyncio.shield(refresh)
        return max(self._value, 0)

    def known(self) -> int | None:
        """The value when it needs no count now (trusted and fresh), else None: the
        ingest path then skips creating a coroutine per request."""
        if self._trusted and self._refresh is None and not self._due():
            return max(self._value, 0)
        return None

    def _due(self) -> bool:
        taken_at = self._taken_at
        return taken_at is None or time.monotonic() - taken_at >= self._refresh_seconds

    async def _recount(self) -> None:
        # Stamped before the count, so requests arriving while it runs do not start more.
        self._taken_at = time.monotonic()
        try:
            self._value = await self._count()
            self._trusted = True
        except BaseException:
            self._taken_at = None  # the next read tries again
            raise
        finally:
            self._refresh = None

    def added(self, n: int) -> None:
        self._value += n

    def claimed(self, n: int) -> None:
        self._value -= n

    def forget(self) -> None:
        """Recount at the next read (after a change this process cannot size cheaply)."""
        self._taken_at = None
        self._trusted = False


def _consume(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
