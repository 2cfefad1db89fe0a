"""A cheap, approximate count of pending trigger instances for load shedding.

Counting pending rows on every webhook request would cost more than storing it, so the
count is taken at most every `refresh_seconds` and adjusted in between by what this
process itself adds and claims. Other processes' changes show up at the next refresh.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable


class BacklogGauge:
    def __init__(self, count: Callable[[], Awaitable[int]], refresh_seconds: float = 1.0) -> None:
        self._count = count
        self._refresh_seconds = refresh_seconds
        self._value = 0
        self._taken_at: float | None = None

    async def value(self) -> int:
        now = time.monotonic()
        if self._taken_at is None or now - self._taken_at >= self._refresh_seconds:
            self._value = await self._count()
            self._taken_at = time.monotonic()
        return max(self._value, 0)

    def added(self, n: int) -> None:
        self._value += n

    def claimed(self, n: int) -> None:
        self._value -= n

    def forget(self) -> None:
        """Recount at the next read (after a change this process cannot size cheaply)."""
        self._taken_at = None
