"""The timers role: fire timer rules' ticks as trigger instances, through the store.

Each distinct timer trigger (type + parameters) of the current rule set has a schedule.
A due tick becomes `store.add_trigger_instance` with the dedupe key `timer:<ref>:<tick>`:
the store's unique constraint makes it one instance even when several processes (on
PostgreSQL) fire the same tick, with no check-then-insert. The rules worker then handles
it like any other trigger instance.

Missed ticks (no process ran this role when they fell) follow `timers.missed`: fire_once
fires the latest missed tick once on start, skip resumes with the next tick. A timer
never fired before has missed nothing: it starts with its next tick (an expired DateTimer
never fires, as in StackStorm). The rule set is re-read every round, so reloads add and
drop schedules.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

from engine.errors import StoreError
from engine.model.records import NewTriggerInstance, utcnow
from engine.process.runtime import Runtime
from engine.rules.index import RuleSet
from engine.rules.timers import (
    Schedule,
    TimerError,
    is_timer,
    schedule_for,
    tick_dedupe_key,
    timer_payload,
    timer_trigger_ref,
)
from engine.workers import sleep_until

log = logging.getLogger(__name__)


@dataclass
class _Timer:
    ref: str
    trigger_type: str
    parameters: dict
    schedule: Schedule
    next_tick: datetime | None


def timer_triggers(ruleset: RuleSet) -> dict[str, tuple[str, dict]]:
    """Trigger ref → (type, parameters) for every enabled timer rule."""
    found: dict[str, tuple[str, dict]] = {}
    for rule in ruleset:
        if rule.enabled and is_timer(rule.trigger_type):
            params = dict(rule.trigger_parameters or {})
            found.setdefault(
                timer_trigger_ref(rule.trigger_type, params), (rule.trigger_type, params)
            )
    return found


async def run_timers_worker(runtime: Runtime, stop: asyncio.Event) -> None:
    policy = runtime.settings.timers.missed
    check = runtime.settings.timers.check_interval
    timers: dict[str, _Timer] = {}
    broken: set[str] = set()
    log.info("timers worker started (missed ticks: %s)", policy)
    while not stop.is_set():
        try:
            await _sync(runtime, timers, broken, policy)
            now = utcnow()
            for timer in list(timers.values()):
                if timer.next_tick is not None and timer.next_tick <= now:
                    # After a stall (suspend, overload) only the latest due tick fires.
                    tick = timer.schedule.latest_between(None, now) or timer.next_tick
                    await _fire(runtime, timer, tick)
                    timer.next_tick = timer.schedule.next_after(max(tick, now))
        except StoreError as exc:
            log.error("timers worker cannot reach the store: %s", exc)
        upcoming = [t.next_tick for t in timers.values() if t.next_tick is not None]
        wait = check
        if upcoming:
            wait = min(check, max(0.0, (min(upcoming) - utcnow()).total_seconds()))
        await sleep_until(stop, asyncio.sleep(wait))
    log.info("timers worker stopped")


async def _sync(runtime: Runtime, timers: dict[str, _Timer], broken: set[str], policy: str):
    wanted = timer_triggers(runtime.ruleset)
    for ref in set(timers) - set(wanted):
        log.info("timer %s removed", ref)
        del timers[ref]
    for ref, (trigger_type, params) in wanted.items():
        if ref in timers or ref in broken:
            continue
        try:
            schedule = schedule_for(trigger_type, params)
        except TimerError as exc:
            broken.add(ref)  # reported once; a fixed rule has another ref
            log.error("timer %s %s is not scheduled: %s", trigger_type, params, exc)
            continue
        timer = _Timer(ref, trigger_type, params, schedule, None)
        now = utcnow()
        last = await _last_fired(runtime, ref)
        if last is not None and policy == "fire_once":
            missed = schedule.latest_between(last, now)
            if missed is not None:
                log.info("timer %s missed ticks while down; firing %s once", ref, missed)
                await _fire(runtime, timer, missed)
        timer.next_tick = schedule.next_after(now)
        timers[ref] = timer
        log.info(
            "timer %s scheduled (%s %s), next tick %s", ref, trigger_type, params, timer.next_tick
        )


async def _last_fired(runtime: Runtime, ref: str) -> datetime | None:
    page = await runtime.store.list_trigger_instances({"trigger": ref}, 1, 0)
    return page.items[0].occurrence_time if page.items else None


async def _fire(runtime: Runtime, timer: _Timer, tick: datetime) -> None:
    accepted = await runtime.store.add_trigger_instance(
        NewTriggerInstance(
            trigger=timer.ref,
            payload=timer_payload(tick, timer.parameters),
            dedupe_key=tick_dedupe_key(timer.ref, tick),
            occurrence_time=tick,
        )
    )
    extra = {"trigger_instance": accepted.id, "trigger": timer.ref}
    if accepted.duplicate:
        log.debug("timer %s tick %s was fired by another process", timer.ref, tick, extra=extra)
    else:
        log.info("timer %s fired for %s", timer.ref, tick.isoformat(), extra=extra)
