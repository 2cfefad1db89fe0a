"""Timer triggers: StackStorm's core.st2.IntervalTimer, DateTimer and CronTimer.

A timer rule listens to a *trigger* made of its timer type and parameters (StackStorm
creates one trigger object per distinct parameter set, and rules with identical parameters
share it). Its trigger instances carry that trigger's ref, `<type>:<digest>`, so the rule
index routes each tick only to the rules of that schedule.

Every process computes the same tick times for a schedule (interval ticks fall on
multiples of the interval since the Unix epoch, cron and date ticks on wall-clock times),
so the dedupe key `timer:<ref>:<tick>` makes a tick one stored trigger instance however
many processes fire it. Pure: no clock is read here; callers pass `now`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.errors import RuleError

INTERVAL_TIMER = "core.st2.IntervalTimer"
DATE_TIMER = "core.st2.DateTimer"
CRON_TIMER = "core.st2.CronTimer"
TIMER_TRIGGER_TYPES = (INTERVAL_TIMER, DATE_TIMER, CRON_TIMER)

# StackStorm's IntervalTimer units (APScheduler IntervalTrigger keyword names).
INTERVAL_UNITS = {
    "seconds": 1,
    "minutes": 60,
    "hours": 3600,
    "days": 86400,
    "weeks": 7 * 86400,
}
CRON_FIELDS = ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Windows searched backwards for the latest cron tick before a moment (cron has no
# "previous fire time"): a walk forward from the start of the smallest window holding one.
_CRON_LOOKBACK = (
    timedelta(minutes=1),
    timedelta(hours=1),
    timedelta(days=1),
    timedelta(days=32),
    timedelta(days=367),
    timedelta(days=5 * 366),
)


class TimerError(RuleError):
    """Raised when a timer rule's trigger parameters do not describe a schedule."""


def is_timer(trigger_type: str) -> bool:
    return trigger_type in TIMER_TRIGGER_TYPES


def timer_trigger_ref(trigger_type: str, parameters: Mapping[str, Any] | None) -> str:
    """The trigger ref of a timer with these parameters: equal parameters, equal ref."""
    canonical = json.dumps(
        dict(parameters or {}), sort_keys=True, separators=(",", ":"), default=str
    )
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return f"{trigger_type}:{digest}"


def trigger_key(trigger_type: str, parameters: Mapping[str, Any] | None) -> str:
    """What trigger instances of a rule with this trigger carry in their `trigger` field."""
    return timer_trigger_ref(trigger_type, parameters) if is_timer(trigger_type) else trigger_type


class Schedule(Protocol):
    def next_after(self, moment: datetime) -> datetime | None:
        """The first tick strictly after `moment`, or None when there is none."""

    def latest_between(self, after: datetime | None, upto: datetime) -> datetime | None:
        """The latest tick in (after, upto], or None."""


@dataclass(frozen=True)
class IntervalSchedule:
    every: timedelta

    def _index(self, moment: datetime) -> int:
        return (moment - _EPOCH) // self.every

    def next_after(self, moment: datetime) -> datetime:
        return _EPOCH + (self._index(moment) + 1) * self.every

    def latest_between(self, after: datetime | None, upto: datetime) -> datetime | None:
        latest = _EPOCH + self._index(upto) * self.every
        return latest if after is None or latest > after else None


@dataclass(frozen=True)
class DateSchedule:
    at: datetime

    def next_after(self, moment: datetime) -> datetime | None:
        return self.at if self.at > moment else None

    def latest_between(self, after: datetime | None, upto: datetime) -> datetime | None:
        if self.at <= upto and (after is None or self.at > after):
            return self.at
        return None


class CronSchedule:
    """StackStorm's CronTimer is APScheduler's CronTrigger: the same fields and syntax."""

    def __init__(self, fields: Mapping[str, Any], timezone: ZoneInfo) -> None:
        # Imported on the first cron timer: most rule sets have none, and APScheduler
        # costs every process that loads rules (the evaluator children too) its start-up.
        from apscheduler.triggers.cron import CronTrigger

        try:
            self._trigger = CronTrigger(**{k: v for k, v in fields.items()}, timezone=timezone)
        except (ValueError, TypeError) as exc:
            raise TimerError(f"{CRON_TIMER}: invalid cron fields: {exc}") from None

    def next_after(self, moment: datetime) -> datetime | None:
        fire = self._trigger.get_next_fire_time(None, moment + _MICROSECOND)
        return None if fire is None else fire.astimezone(UTC)

    def latest_between(self, after: datetime | None, upto: datetime) -> datetime | None:
        for window in _CRON_LOOKBACK:
            start = upto - window
            if after is not None and start < after:
                start = after
            tick = self.next_after(start)
            if tick is None or tick > upto:
                if after is not None and start == after:
                    return None
                continue
            latest = tick
            while (tick := self.next_after(tick)) is not None and tick <= upto:
                latest = tick
            return latest
        return None


def schedule_for(trigger_type: str, parameters: Mapping[str, Any] | None) -> Schedule:
    """The schedule of a timer trigger; TimerError says what is wrong with the parameters."""
    params = dict(parameters or {})
    timezone = _timezone(trigger_type, params.pop("timezone", None))
    if trigger_type == INTERVAL_TIMER:
        _only(trigger_type, params, ("unit", "delta"))
        unit, delta = params.get("unit"), params.get("delta")
        if unit not in INTERVAL_UNITS:
            raise TimerError(
                f"{INTERVAL_TIMER}: unit must be one of {', '.join(INTERVAL_UNITS)}, got {unit!r}"
            )
        if isinstance(delta, bool) or not isinstance(delta, int | float) or delta <= 0:
            raise TimerError(f"{INTERVAL_TIMER}: delta must be a positive number, got {delta!r}")
        every = timedelta(seconds=delta * INTERVAL_UNITS[unit])
        if every < timedelta(milliseconds=100):
            raise TimerError(f"{INTERVAL_TIMER}: the interval must be at least 0.1 seconds")
        return IntervalSchedule(every)
    if trigger_type == DATE_TIMER:
        _only(trigger_type, params, ("date",))
        return DateSchedule(_parse_date(params.get("date"), timezone))
    if trigger_type == CRON_TIMER:
        _only(trigger_type, params, CRON_FIELDS)
        if not params:
            raise TimerError(f"{CRON_TIMER}: give at least one of {', '.join(CRON_FIELDS)}")
        return CronSchedule(params, timezone)
    raise TimerError(f"{trigger_type!r} is not a timer; timers: {', '.join(TIMER_TRIGGER_TYPES)}")


def timer_payload(tick: datetime, parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """StackStorm's timer payload: `executed_at` as str(datetime) in UTC, and the schedule."""
    return {"executed_at": str(tick.astimezone(UTC)), "schedule": dict(parameters or {})}


def tick_dedupe_key(ref: str, tick: datetime) -> str:
    return f"timer:{ref}:{tick.astimezone(UTC).isoformat()}"


def _only(trigger_type: str, params: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise TimerError(
            f"{trigger_type}: unknown parameter {unknown[0]!r}; "
            f"known: {', '.join((*allowed, 'timezone'))}"
        )


def _timezone(trigger_type: str, name: Any) -> ZoneInfo:
    if name is None:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise TimerError(
            f"{trigger_type}: unknown timezone {name!r} (e.g. UTC, Europe/Paris)"
        ) from None


def _parse_date(value: Any, timezone: ZoneInfo) -> datetime:
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise TimerError(
                f"{DATE_TIMER}: date {value!r} is not a date and time like 2030-01-31 08:00:00"
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone)
    return moment.astimezone(UTC)
