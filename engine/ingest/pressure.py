"""Ingest before rules under overload: while webhooks arrive faster than the rules worker
decides them, it takes only a share of the event loop's time, a share that grows with the
backlog.

Both run on one loop, so every millisecond spent deciding rules is a millisecond no
webhook is answered. Accepting a webhook durably is what a sender waits for; deciding it
can follow a little later (the instance is stored). While requests keep arriving, the
rules worker pauses after each chunk so that it takes at most its share of the time: the
configured share with an empty backlog, rising (with the square of how full the backlog
is) to all of it as the backlog approaches ingest.max_backlog (above which ingest answers
503) — so a burst is accepted at full speed and a sustained flood is not shed while the
rules worker could still keep up.
When ingest goes quiet the rules worker runs flat out and works off the backlog.

Only under overload: while the rules worker keeps up — no more than `keeps_up_below`
instances wait, one claim's worth — it never pauses, so at a steady rate it can sustain,
each webhook is decided as soon as it is stored. Pausing whenever webhooks arrived held
every rule back for as long as a steady stream lasted (6.6 s at 1,000 webhooks/s).
"""

from __future__ import annotations

import asyncio
import time

# Webhooks seen within this many seconds mean ingest is busy.
BUSY_WINDOW = 0.05
# The longest single pause, so that rules keep moving even under a flood.
MAX_PAUSE = 0.25


class IngestPressure:
    def __init__(self, share: float, max_backlog: int, keeps_up_below: int = 0) -> None:
        self.share = share
        self.max_backlog = max_backlog
        self.keeps_up_below = keeps_up_below
        self._last_request = float("-inf")

    def saw_request(self) -> None:
        self._last_request = time.monotonic()

    def busy(self) -> bool:
        return time.monotonic() - self._last_request < BUSY_WINDOW

    def share_at(self, backlog: int) -> float:
        """The rules worker's share of the loop with `backlog` instances waiting: it grows
        with the square of how full the backlog is, so that a burst filling a fraction of
        it is still accepted at nearly full speed, and reaches 1 at the limit."""
        filled = min(1.0, max(0, backlog) / self.max_backlog) if self.max_backlog > 0 else 1.0
        return min(1.0, self.share + (1.0 - self.share) * filled * filled)

    def pause_after(self, worked_seconds: float, backlog: int) -> float:
        """Seconds to pause after `worked_seconds` of rules work (0 when ingest is quiet or
        the rules worker keeps up)."""
        share = self.share_at(backlog)
        if share >= 1.0 or backlog <= self.keeps_up_below or not self.busy():
            return 0.0
        return min(MAX_PAUSE, worked_seconds * (1.0 - share) / share)

    async def yield_to_ingest(self, worked_seconds: float, backlog: int) -> None:
        pause = self.pause_after(worked_seconds, backlog)
        if pause > 0:
            await asyncio.sleep(pause)
