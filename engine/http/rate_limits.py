"""Rate limits on what senders and API keys may ask (issue 23): token buckets, 429.

A hook's `rate_limit` (`webhooks.<name>.rate_limit: {rate: 100/s, burst: 200}`) bounds
all the requests to it; an API key's (`hookyard apikey create --rate 100/s`) bounds that
key's requests, webhooks and API alike. Past a limit the answer is 429 with
`Retry-After` (whole seconds until a token is back) and nothing is stored.

One process keeps its buckets in memory. Processes sharing a PostgreSQL store share the
buckets through it: each process takes a few tokens at a time (`_CHUNK_SECONDS` of the
rate, at least one) from a bucket row (engine.store.ops.rate_buckets) and spends them
locally, so the limit holds across processes within those chunks — N processes may run
ahead by at most N chunks — for one store round trip per chunk, not per request.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from engine.errors import IngestError
from engine.outbound.pacing import TokenBucket
from engine.store import Store

# Tokens a process takes from a shared bucket at once: this many seconds of the rate.
_CHUNK_SECONDS = 0.1


@dataclass(frozen=True)
class RateLimit:
    rate: float  # per second
    burst: float = 0.0  # 0: one second's worth

    @property
    def capacity(self) -> float:
        return self.burst or max(1.0, self.rate)


class RateLimited(IngestError):
    """Raised when a request is over a rate limit: 429 with Retry-After."""

    def __init__(self, what: str, limit: RateLimit, wait: float) -> None:
        self.retry_after = max(1, math.ceil(wait))
        super().__init__(
            f"{what} is over its rate limit of {limit.rate:g} requests/s (burst "
            f"{limit.capacity:g}); retry after {self.retry_after} s",
            429,
        )


class RateLimits:
    """The buckets of one process; `check` admits a request or raises RateLimited."""

    def __init__(self, store: Store) -> None:
        self._store = store
        # Told of each refusal (the metrics' observer), once the app has started.
        self.observe = None
        self._local: dict[str, TokenBucket] = {}
        # Tokens taken from shared buckets and not spent yet.
        self._reserve: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def check(self, key: str, what: str, limit: RateLimit, label: tuple[str, str]) -> None:
        wait = await self._take(key, limit)
        if wait:
            if self.observe is not None:
                self.observe("rate_limited", *label)
            raise RateLimited(what, limit, wait)

    async def _take(self, key: str, limit: RateLimit) -> float:
        if not self._store.shared_between_processes:
            return self._take_local(key, limit)
        if self._reserve.get(key, 0) > 0:
            self._reserve[key] -= 1
            return 0.0
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # one store round trip refills for every waiting request
            if self._reserve.get(key, 0) > 0:
                self._reserve[key] -= 1
                return 0.0
            want = max(1, int(limit.rate * _CHUNK_SECONDS))
            granted, wait = await self._store.take_rate_tokens(
                key, limit.rate, limit.capacity, want
            )
            if not granted:
                return wait or 1.0 / limit.rate
            self._reserve[key] = granted - 1
            return 0.0

    def _take_local(self, key: str, limit: RateLimit) -> float:
        bucket = self._local.get(key)
        if bucket is None or bucket.rate != limit.rate or bucket.capacity != limit.capacity:
            bucket = self._local[key] = TokenBucket(limit.rate, limit.capacity)
        wait = bucket.wait_for_one(time.monotonic())
        if wait:
            return wait
        bucket.tokens -= 1.0
        return 0.0
