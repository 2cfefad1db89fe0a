"""Per-subscription delivery rate limits (a subscription's `rateLimit`, deliveries per
second): one token bucket per subscription in each deliveries worker.

The worker asks `spare(id)` how many sends it may start now and claims no more than that
(engine.workers.deliveries), so deliveries over the rate stay in the store, due, instead
of waiting in memory with a lease running; `take(id, rate)` spends a token when a send
starts (waiting for one if a first claim, made before the rate was known, took more).
The limit holds per process: N processes sharing a PostgreSQL store send up to N times
the rate in all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    # The largest burst; 0: one second's worth (at least one token).
    capacity: float = 0.0
    tokens: float = field(init=False)
    stamp: float = field(init=False)

    def __post_init__(self) -> None:
        self.capacity = self.capacity or max(1.0, self.rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for_one(self, now: float) -> float:
        """Seconds until a token is available (0: now)."""
        self.refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


class DeliveryPacer:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets: dict[str, TokenBucket] = {}
        self._clock = clock

    def spare(self, subscription_id: str) -> int | None:
        """Sends that may start now for a limited subscription; None: not limited."""
        bucket = self._buckets.get(subscription_id)
        if bucket is None:
            return None
        bucket.refill(self._clock())
        return int(bucket.tokens)

    def limited(self) -> list[str]:
        return list(self._buckets)

    async def take(self, subscription_id: str, rate: float) -> None:
        """Spend one token of `subscription_id` (limited to `rate`/s; 0: unlimited)."""
        if rate <= 0:
            self._buckets.pop(subscription_id, None)
            return
        bucket = self._buckets.get(subscription_id)
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[subscription_id] = TokenBucket(rate)
        while (delay := bucket.wait_for_one(self._clock())) > 0:
            await asyncio.sleep(delay)
        bucket.tokens -= 1.0
