"""API key records kept in memory for a moment, so a request is not a store read.

Reading the key's record from the store on every request cost the API process more than
half of its webhook throughput (issue 18). A record found by its prefix is kept here for
`max_age` seconds:

- in this process a change takes effect at once: the key API (engine.http.apikeys_api)
  calls `forget()` after each create, disable, extend, role change or delete;
- in another process sharing the store (another `hookyard serve` on PostgreSQL, or
  `hookyard apikey disable` run beside a server), within `max_age` seconds — the cached
  record is read again after that;
- expiry stays exact: the record's `expires_at` is compared with the clock on every use by
  the caller, not when it was cached.

Only found records are kept: an unknown prefix is read again each time (a client guessing
keys gains nothing from the cache, and it cannot fill it). The cache holds at most
`max_entries` records, least recently used first out.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from engine.model.apikeys import ApiKey

FindKey = Callable[[str], Awaitable[ApiKey | None]]


class ApiKeyCache:
    def __init__(
        self,
        find: FindKey,
        *,
        max_age: float = 1.0,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._find = find
        self._max_age = max_age
        self._max_entries = max_entries
        self._clock = clock
        self._records: OrderedDict[str, tuple[float, ApiKey]] = OrderedDict()
        # Bumped by forget(): a lookup that started before a change must not store the
        # record it read, which may be the one the change replaced.
        self._generation = 0

    async def find(self, prefix: str) -> ApiKey | None:
        now = self._clock()
        cached = self._records.get(prefix)
        if cached is not None and now - cached[0] < self._max_age:
            self._records.move_to_end(prefix)
            return cached[1]
        generation = self._generation
        record = await self._find(prefix)
        if record is None:
            self._records.pop(prefix, None)
        elif generation == self._generation:
            self._records[prefix] = (now, record)
            self._records.move_to_end(prefix)
            while len(self._records) > self._max_entries:
                self._records.popitem(last=False)
        return record

    def forget(self) -> None:
        """Drop every record: a key changed in this process."""
        self._generation += 1
        self._records.clear()
