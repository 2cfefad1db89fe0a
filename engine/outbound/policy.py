"""The delivery policy: when to try a delivery again, decided from plain data (no I/O).

A schedule is the list of delays before each attempt, so its length is the number of
attempts: Svix's ``[0s, 5s, 5m, 30m, 2h, 5h, 10h, 10h]`` or Identus' ``[0s, 5s, 5s]``.
Delays are scaled by a random factor in ``[1 - jitter, 1 + jitter]`` so that a receiver
that comes back up is not hit by every queued retry in the same second.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from engine.config import OutboundSettings
from engine.errors import ConfigError
from engine.support.durations import duration_seconds


def parse_duration(text: str | float, where: str) -> float:
    """Seconds from ``"90"``, ``"5s"``, ``"5m"``, ``"2h"``, ``"1d"`` (or a number)."""
    try:
        return duration_seconds(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class RetryPolicy:
    # Delay before attempt n+1 is delays[n]; len(delays) is the number of attempts.
    delays: tuple[float, ...]
    jitter: float = 0.0

    @classmethod
    def from_settings(cls, settings: OutboundSettings) -> RetryPolicy:
        return cls.parse(settings.retry_schedule, settings.retry_jitter)

    @classmethod
    def parse(cls, schedule: Sequence[str | float], jitter: float = 0.0) -> RetryPolicy:
        where = "outbound.retry_schedule"
        if not schedule:
            raise ConfigError(f"{where}: needs at least one delay (the first attempt's)")
        if not 0.0 <= jitter < 1.0:
            raise ConfigError(f"outbound.retry_jitter: {jitter!r} must be in [0, 1)")
        delays = tuple(parse_duration(item, f"{where}[{i}]") for i, item in enumerate(schedule))
        if delays[0] != 0:
            raise ConfigError(
                f"{where}[0]: the first attempt goes out as soon as the event happens;"
                f" start the schedule with 0s (got {schedule[0]!r})"
            )
        return cls(delays, jitter)

    @property
    def max_attempts(self) -> int:
        return len(self.delays)

    def delay_after(self, attempts_made: int, rng: random.Random | None = None) -> float | None:
        """Seconds until the next attempt after `attempts_made` failures; None: exhausted."""
        if attempts_made >= self.max_attempts:
            return None
        return self._jittered(self.delays[attempts_made], rng)

    def _jittered(self, delay: float, rng: random.Random | None) -> float:
        if delay == 0 or self.jitter == 0:
            return delay
        factor = (rng or random).uniform(1.0 - self.jitter, 1.0 + self.jitter)
        return delay * factor


def is_success(status_code: int | None) -> bool:
    """Only a 2xx counts: 3xx (redirects are not followed), 4xx and 5xx are failures."""
    return status_code is not None and 200 <= status_code < 300
