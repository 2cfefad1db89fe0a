"""Ingest before rules: while webhooks arrive, the rules worker in the same process takes
only a share of the event loop's time.

Both run on one loop, so every millisecond spent deciding rules is a millisecond no
webhook is answered. Accepting a webhook durably is what a sender waits for; deciding it
can follow a little later (the instance is stored). While requests keep arriving, the
rules worker pauses after each chunk so that it takes at most `share` of the time; when
ingest goes quiet it runs flat out and works off the backlog. The backlog stays bounded
by ingest.max_backlog, above which ingest answers 503.
"""

from __future__ import annotations

import asyncio
import time

# Webhooks seen within this many seconds mean ingest is busy.
BUSY_WINDOW = 0.05
# The longest single pause, so that rules keep moving even under a flood.
MAX_PAUSE = 0.25


class IngestPressure:
    def __init__(self, share: float) -> None:
        self.share = share
        self._last_request = float("-inf")

    def saw_request(self) -> None:
        self._last_request = time.monotonic()

    def busy(self) -> bool:
        return time.monotonic() - self._last_request < BUSY_WINDOW

    def pause_after(self, worked_seconds: float) -> float:
        """Seconds to pause after `worked_seconds` of rules work (0 when ingest is quiet)."""
        if self.share >= 1.0 or not self.busy():
            return 0.0
        return min(MAX_PAUSE, worked_seconds * (1.0 - self.share) / self.share)

    async def yield_to_ingest(self, worked_seconds: float) -> None:
        pause = self.pause_after(worked_seconds)
        if pause > 0:
            await asyncio.sleep(pause)
