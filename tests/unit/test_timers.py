"""Timer schedules (StackStorm's IntervalTimer, DateTimer, CronTimer) and their routing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.rules import RuleSet, load_rule
from engine.rules.timers import (
    CRON_TIMER,
    DATE_TIMER,
    INTERVAL_TIMER,
    TimerError,
    schedule_for,
    tick_dedupe_key,
    timer_payload,
    timer_trigger_ref,
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_interval_ticks_are_epoch_aligned_so_every_process_agrees():
    schedule = schedule_for(INTERVAL_TIMER, {"unit": "seconds", "delta": 10})
    assert schedule.next_after(at("2030-01-01 00:00:03")) == at("2030-01-01 00:00:10")
    assert schedule.next_after(at("2030-01-01 00:00:10")) == at("2030-01-01 00:00:20")
    assert schedule.latest_between(None, at("2030-01-01 00:00:19")) == at("2030-01-01 00:00:10")
    assert schedule.latest_between(at("2030-01-01 00:00:10"), at("2030-01-01 00:00:19")) is None
    hourly = schedule_for(INTERVAL_TIMER, {"unit": "hours", "delta": 2})
    assert hourly.next_after(at("2030-01-01 01:30:00")) == at("2030-01-01 02:00:00")


def test_date_timer_fires_once_in_its_timezone():
    schedule = schedule_for(DATE_TIMER, {"date": "2030-06-01 12:00:00", "timezone": "Europe/Paris"})
    tick = at("2030-06-01 10:00:00")  # Paris is UTC+2 in June
    assert schedule.next_after(at("2030-01-01 00:00:00")) == tick
    assert schedule.next_after(tick) is None
    assert schedule.latest_between(None, tick + timedelta(days=1)) == tick
    assert schedule.latest_between(tick, tick + timedelta(days=1)) is None


def test_cron_timer_uses_stackstorm_fields():
    schedule = schedule_for(CRON_TIMER, {"hour": 9, "minute": 30, "day_of_week": "mon-fri"})
    # 2030-01-04 is a Friday: next is Monday 2030-01-07 09:30 UTC.
    assert schedule.next_after(at("2030-01-04 10:00:00")) == at("2030-01-07 09:30:00")
    assert schedule.latest_between(None, at("2030-01-07 09:00:00")) == at("2030-01-04 09:30:00")
    assert schedule.latest_between(at("2030-01-04 09:30:00"), at("2030-01-07 09:00:00")) is None
    every_5s = schedule_for(CRON_TIMER, {"second": "*/5"})
    assert every_5s.next_after(at("2030-01-01 00:00:05")) == at("2030-01-01 00:00:10")
    assert every_5s.latest_between(None, at("2030-01-01 00:00:14")) == at("2030-01-01 00:00:10")


@pytest.mark.parametrize(
    ("trigger_type", "parameters", "message"),
    [
        (INTERVAL_TIMER, {"unit": "fortnights", "delta": 1}, "unit must be one of"),
        (INTERVAL_TIMER, {"unit": "seconds", "delta": 0}, "delta must be a positive"),
        (INTERVAL_TIMER, {"unit": "seconds", "delta": 1, "every": 2}, "unknown parameter 'every'"),
        (DATE_TIMER, {"date": "next tuesday"}, "is not a date"),
        (CRON_TIMER, {"hour": 25}, "invalid cron fields"),
        (CRON_TIMER, {}, "at least one of"),
        (CRON_TIMER, {"minute": 1, "timezone": "Mars/Olympus"}, "unknown timezone"),
    ],
)
def test_bad_timer_parameters_say_what_is_wrong(trigger_type, parameters, message):
    with pytest.raises(TimerError, match=message):
        schedule_for(trigger_type, parameters)


def test_payload_and_dedupe_key():
    tick = at("2030-01-01 00:00:10")
    ref = timer_trigger_ref(INTERVAL_TIMER, {"unit": "seconds", "delta": 10})
    assert timer_payload(tick, {"unit": "seconds", "delta": 10}) == {
        "executed_at": "2030-01-01 00:00:10+00:00",
        "schedule": {"unit": "seconds", "delta": 10},
    }
    assert tick_dedupe_key(ref, tick) == f"timer:{ref}:2030-01-01T00:00:10+00:00"


def timer_rule(name: str, delta: int):
    return load_rule(
        {
            "name": name,
            "pack": "t",
            "trigger": {"type": INTERVAL_TIMER, "parameters": {"unit": "seconds", "delta": delta}},
            "action": {"ref": "core.noop"},
        }
    )


def test_each_tick_reaches_only_the_rules_of_its_schedule():
    ruleset = RuleSet([timer_rule("a", 5), timer_rule("b", 10), timer_rule("c", 5)])
    five = timer_trigger_ref(INTERVAL_TIMER, {"delta": 5, "unit": "seconds"})
    ten = timer_trigger_ref(INTERVAL_TIMER, {"unit": "seconds", "delta": 10})
    assert five != ten
    assert [r.name for r in ruleset.match(five, {})] == ["a", "c"]
    assert [r.name for r in ruleset.match(ten, {})] == ["b"]
    # A bare type (e.g. posted to /webhooks/st2) reaches no timer rule.
    assert ruleset.match(INTERVAL_TIMER, {}) == []
