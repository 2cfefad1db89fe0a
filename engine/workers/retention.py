"""The retention role: finished records older than their retention, purged in small batches.

Each pass (every `retention.interval` seconds) purges every kind with a retention
(engine.config.RetentionSettings) batch by batch — at most `retention.batch` records per
transaction, a pause between batches — until a batch comes back short, so ingest and the
other roles get the writer between two batches and never wait for a whole pass. What is
still to be done is never purged (engine.store.ops.retention says what qualifies). After
a pass that deleted something, SQLite gives the freed pages back to the file system.

Several processes may run the role on one PostgreSQL: their batches take different rows
(SKIP LOCKED), and a record purged twice is simply not there the second time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from engine.config import RETENTION_KINDS, RetentionSettings, retention_seconds
from engine.errors import ConfigError, StoreError
from engine.model.records import utcnow
from engine.process.runtime import Runtime
from engine.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PurgePlan:
    """What one pass purges: per kind, records older than `before`."""

    before: Mapping[str, datetime]
    dedupe_before: datetime

    @classmethod
    def at(cls, now: datetime, seconds: Mapping[str, float | None]) -> PurgePlan:
        before = {
            kind: now - timedelta(seconds=seconds[kind])
            for kind in RETENTION_KINDS
            if seconds.get(kind) is not None
        }
        return cls(before, now - timedelta(seconds=seconds.get("dedupe_window") or 0))

    @classmethod
    def requested(
        cls,
        now: datetime,
        settings: RetentionSettings,
        kinds: Sequence[str] = (),
        older_than: float | None = None,
    ) -> PurgePlan:
        """A purge asked for by hand (`hookyard purge`, POST /api/v1/purge): `kinds`
        (default: every kind with a retention) older than `older_than` seconds (default:
        each kind's retention). The dedupe window still holds."""
        unknown = [k for k in kinds if k not in RETENTION_KINDS]
        if unknown:
            raise ConfigError(f"unknown kind {unknown[0]!r}; known: {', '.join(RETENTION_KINDS)}")
        seconds = retention_seconds(settings, "retention")
        if older_than is not None:
            seconds = {**seconds, **{k: older_than for k in kinds or RETENTION_KINDS}}
        plan = cls.at(now, seconds)
        if not kinds:
            return plan
        missing = [k for k in kinds if k not in plan.before]
        if missing:
            raise ConfigError(
                f"{missing[0]} are kept forever (retention.{missing[0]} is null); "
                "give --older-than to purge them"
            )
        return cls({k: plan.before[k] for k in kinds}, plan.dedupe_before)


async def purge_kind(
    store: Store,
    kind: str,
    before: datetime,
    dedupe_before: datetime,
    *,
    batch: int,
    pause: float,
    stop: asyncio.Event | None = None,
) -> int:
    """Purge `kind` older than `before` batch by batch; returns how many were deleted."""
    total = 0
    while stop is None or not stop.is_set():
        deleted = await store.purge(kind, before, limit=batch, dedupe_before=dedupe_before)
        total += deleted
        if deleted < batch:
            break
        await asyncio.sleep(pause)
    return total


async def run_plan(
    store: Store,
    plan: PurgePlan,
    settings: RetentionSettings,
    *,
    dry_run: bool = False,
    stop: asyncio.Event | None = None,
    observe: Callable[..., None] | None = None,
) -> dict[str, int]:
    """Purge (or with `dry_run` count) what `plan` names; returns the count by kind."""
    counts: dict[str, int] = {}
    for kind, before in plan.before.items():
        if dry_run:
            counts[kind] = await store.purge(
                kind, before, limit=settings.batch, dedupe_before=plan.dedupe_before, dry_run=True
            )
            continue
        counts[kind] = await purge_kind(
            store,
            kind,
            before,
            plan.dedupe_before,
            batch=settings.batch,
            pause=settings.pause,
            stop=stop,
        )
        if counts[kind] and observe is not None:
            observe("purged", kind, counts[kind])
    if not dry_run and any(counts.values()):
        await store.reclaim_space()
        log.info("retention purged %s", ", ".join(f"{n} {k}" for k, n in counts.items() if n))
    return counts


async def purge_pass(
    runtime: Runtime, settings: RetentionSettings, stop: asyncio.Event | None = None
) -> dict[str, int]:
    plan = PurgePlan.at(utcnow(), retention_seconds(settings, "retention"))
    return await run_plan(runtime.store, plan, settings, stop=stop, observe=runtime.observe)


async def run_retention_worker(runtime: Runtime, stop: asyncio.Event) -> None:
    settings = runtime.settings.retention
    log.info("retention worker started (every %g s)", settings.interval)
    while not stop.is_set():
        try:
            await purge_pass(runtime, settings, stop)
        except StoreError as exc:  # the store is down or busy: the next pass tries again
            log.warning("retention pass failed: %s", exc)
        try:
            await asyncio.wait_for(stop.wait(), settings.interval)
        except TimeoutError:
            pass
