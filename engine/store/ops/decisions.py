"""Rule decisions, both dialects: the enforcements of one trigger instance with their
requested executions, once_per keys, final status and explain traces
(`record_enforcements`), several instances' decisions in one transaction
(`record_decisions`), and the reads that explain them (evaluations, queue stats).

Traces are written in the transaction that records a trigger instance's enforcements, so
an instance is never processed without its trace or traced without being processed.
In `record_decisions` each decision is all-or-nothing on its own, inside a savepoint: a
decision whose lease was lost (or whose instance is gone, or whose data cannot be stored)
is rolled back alone and its error is returned in its place, so one stale instance never
blocks the others. Anything else (the database failing) rolls the whole transaction back
and is raised. A decision's outbound events and traces stay in its savepoint.

The store-facing operations return (per instance: enforcement ids written or the error
that refused it, whether any execution was requested), so the store knows whether to wake
the actions worker.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engine.errors import Conflict, LeaseLost, NotFound, StoreError
from engine.model.records import EnforcementOutcome, InstanceDecision
from engine.outbound import events as outbound_events
from engine.store.codec import UnstorableValue, dumps, loads, time_to_text
from engine.store.ops import columns, outbox
from engine.store.ops import executions as execution_ops

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg

Evaluations = Sequence[Mapping[str, Any]]


# Queue name -> (table, status of the items waiting in it).
QUEUE_WAITING_STATUS = {
    "trigger_instances": ("trigger_instances", "pending"),
    "executions": ("executions", "requested"),
}


def _created_seconds(row_id: str | None) -> float | None:
    """Ids start with 8 hex digits of creation seconds (engine.model.records.new_id)."""
    if not row_id:
        return None
    try:
        return float(int(row_id[:8], 16))
    except ValueError:
        return None


def _stats(rows: Mapping[str, tuple[int, str | None]]) -> dict[str, dict[str, float]]:
    now = time.time()
    stats = {}
    for queue, (depth, oldest_id) in rows.items():
        created = _created_seconds(oldest_id)
        age = max(0.0, now - created) if created is not None and depth else 0.0
        stats[queue] = {"depth": float(depth), "oldest_age_seconds": age}
    return stats


# Errors that belong to one decision, not to the database.
DECISION_ERRORS = (LeaseLost, NotFound, Conflict, UnstorableValue)


Outcome = list[str] | StoreError


# --- SQLite (plain functions run on the store's threads, in its transactions) ---


def _sqlite_enforce(
    conn: sqlite3.Connection,
    instance_id: str,
    lease_token: str,
    outcomes: Sequence[EnforcementOutcome],
    final_status: str,
    now: datetime,
) -> tuple[list[str], int]:
    """Returns the enforcement ids written and the number of executions requested."""
    at = time_to_text(now)
    cursor = conn.execute(
        "UPDATE trigger_instances SET status = ?, lease_token = NULL, lease_expires_at = NULL,"
        " updated_at = ? WHERE id = ? AND lease_token = ? AND status = 'processing'",
        (final_status, at, instance_id, lease_token),
    )
    if cursor.rowcount == 0:
        raise columns.sqlite_missing_or_lost(
            conn, "trigger_instances", "trigger instance", instance_id
        )
    written: list[str] = []
    executions = 0
    for outcome in outcomes:
        if outcome.once_per_key is not None:
            cursor = conn.execute(
                "INSERT INTO once_per_keys (rule_ref, key, trigger_instance_id, created_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (outcome.rule_ref, outcome.once_per_key, instance_id, at),
            )
            if cursor.rowcount == 0:
                continue  # this rule already fired for this key
        execution_id = None
        if outcome.execution is not None:
            execution_ops.sqlite_insert(conn, outcome.execution, now, instance_id, outcome.rule_ref)
            execution_id = outcome.execution.id
            executions += 1
        conn.execute(
            f"INSERT INTO enforcements ({columns.SQLITE_ENFORCEMENT_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                outcome.id,
                instance_id,
                outcome.rule_ref,
                outcome.rule_id,
                outcome.status,
                outcome.failure_reason,
                execution_id,
                at,
                dumps(outcome.trace, "criteria trace"),
            ),
        )
        written.append(outcome.id)
    outbox.sqlite_emit(
        conn,
        now,
        lambda: outbound_events.enforcements_recorded(instance_id, final_status, outcomes, written),
    )
    return written, executions


def sqlite_record_enforcements(
    conn: sqlite3.Connection,
    instance_id: str,
    lease_token: str,
    outcomes: Sequence[EnforcementOutcome],
    final_status: str,
    now: datetime,
    evaluations: Evaluations | None,
) -> tuple[list[str], int]:
    result = _sqlite_enforce(conn, instance_id, lease_token, outcomes, final_status, now)
    if evaluations is not None:
        conn.execute(
            "INSERT INTO rule_evaluations (trigger_instance_id, evaluations, recorded_at)"
            " VALUES (?, ?, ?) ON CONFLICT (trigger_instance_id) DO UPDATE"
            " SET evaluations = excluded.evaluations, recorded_at = excluded.recorded_at",
            (instance_id, dumps(list(evaluations), "rule evaluations"), time_to_text(now)),
        )
    return result


def sqlite_get_evaluations(conn: sqlite3.Connection, instance_id: str) -> list[Any] | None:
    row = conn.execute(
        "SELECT evaluations FROM rule_evaluations WHERE trigger_instance_id = ?", (instance_id,)
    ).fetchone()
    return None if row is None else loads(row[0])


def sqlite_queue_stats(conn: sqlite3.Connection) -> dict[str, dict[str, float]]:
    rows = {}
    for queue, (table, status) in QUEUE_WAITING_STATUS.items():
        depth = conn.execute(f"SELECT count(*) FROM {table} WHERE status = ?", (status,))
        oldest = conn.execute(
            f"SELECT id FROM {table} WHERE status = ? ORDER BY id LIMIT 1", (status,)
        ).fetchone()
        rows[queue] = (depth.fetchone()[0], oldest[0] if oldest else None)
    return _stats(rows)


def sqlite_record_decisions(
    conn: sqlite3.Connection, decisions: Sequence[InstanceDecision], now: datetime
) -> tuple[list[Outcome], int]:
    """(per decision: enforcement ids written or its error, executions requested)."""
    results: list[Outcome] = []
    executions = 0
    for decision in decisions:
        conn.execute("SAVEPOINT decision")
        try:
            written, requested = sqlite_record_enforcements(
                conn,
                decision.instance_id,
                decision.lease_token,
                decision.outcomes,
                decision.final_status,
                now,
                decision.evaluations,
            )
        except (*DECISION_ERRORS, sqlite3.IntegrityError) as exc:
            conn.execute("ROLLBACK TO decision")
            conn.execute("RELEASE decision")
            results.append(exc if isinstance(exc, StoreError) else Conflict(f"sqlite: {exc}"))
            continue
        conn.execute("RELEASE decision")
        results.append(written)
        executions += requested
    return results, executions


# --- PostgreSQL (coroutines on a pool connection, in a transaction) ---


async def _pg_enforce(
    conn: asyncpg.Connection,
    instance_id: str,
    lease_token: str,
    outcomes: Sequence[EnforcementOutcome],
    final_status: str,
    now: datetime,
) -> list[str]:
    updated = await conn.fetchval(
        "UPDATE trigger_instances SET status = $3, lease_token = NULL, lease_expires_at = NULL,"
        " updated_at = now() WHERE id = $1 AND lease_token = $2 AND status = 'processing'"
        " RETURNING id",
        instance_id,
        lease_token,
        final_status,
    )
    if updated is None:
        raise await columns.pg_missing_or_lost(
            conn, "trigger_instances", "trigger instance", instance_id
        )
    written: list[str] = []
    executions = 0
    for outcome in outcomes:
        if outcome.once_per_key is not None:
            remembered = await conn.fetchval(
                "INSERT INTO once_per_keys (rule_ref, key, trigger_instance_id, created_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1",
                outcome.rule_ref,
                outcome.once_per_key,
                instance_id,
                now,
            )
            if remembered is None:
                continue  # this rule already fired for this key
        execution_id = None
        if outcome.execution is not None:
            await execution_ops.pg_insert(
                conn, outcome.execution, now, instance_id, outcome.rule_ref
            )
            execution_id = outcome.execution.id
            executions += 1
        await conn.execute(
            _PG_INSERT_ENFORCEMENT, *_pg_enforcement_row(outcome, instance_id, execution_id, now)
        )
        written.append(outcome.id)
    if executions:
        await columns.pg_notify(conn, "executions")
    await outbox.pg_emit(
        conn,
        now,
        lambda: outbound_events.enforcements_recorded(instance_id, final_status, outcomes, written),
    )
    return written


_PG_INSERT_ENFORCEMENT = (
    "INSERT INTO enforcements (id, trigger_instance_id, rule_ref, rule_id, status,"
    " failure_reason, execution_id, enforced_at, trace)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)"
)


# A trigger instance's evaluation traces (engine.store.ops.decisions).
_PG_UPSERT_EVALUATIONS = (
    "INSERT INTO rule_evaluations (trigger_instance_id, evaluations, recorded_at)"
    " VALUES ($1, $2::jsonb, $3) ON CONFLICT (trigger_instance_id) DO UPDATE"
    " SET evaluations = excluded.evaluations, recorded_at = excluded.recorded_at"
)


def _pg_enforcement_row(
    outcome: EnforcementOutcome, instance_id: str, execution_id: str | None, now: datetime
) -> tuple[Any, ...]:
    return (
        outcome.id,
        instance_id,
        outcome.rule_ref,
        outcome.rule_id,
        outcome.status,
        outcome.failure_reason,
        execution_id,
        now,
        dumps(outcome.trace, "criteria trace"),
    )


class NotTogether(Exception):
    """A chunk of decisions cannot be written set-wise (a lease lost, an instance gone)."""


async def _pg_record_together(
    conn: asyncpg.Connection, decisions: Sequence[InstanceDecision], now: datetime
) -> list[list[str]]:
    """What record_enforcements and the explain trace write, for a whole chunk of
    decisions without once_per outcomes, in a few statements; NotTogether unless every
    instance's lease is still held (the caller then records them one by one)."""
    finished = await conn.fetch(
        "UPDATE trigger_instances t SET status = r.status, lease_token = NULL,"
        " lease_expires_at = NULL, updated_at = now()"
        " FROM unnest($1::text[], $2::text[], $3::text[]) AS r(id, token, status)"
        " WHERE t.id = r.id AND t.lease_token = r.token AND t.status = 'processing'"
        " RETURNING t.id",
        [d.instance_id for d in decisions],
        [d.lease_token for d in decisions],
        [d.final_status for d in decisions],
    )
    if len(finished) != len(decisions):
        raise NotTogether(f"{len(decisions) - len(finished)} lease(s) lost")
    executions = []
    enforcements = []
    events: list[Any] = []
    for decision in decisions:
        instance_id = decision.instance_id
        for outcome in decision.outcomes:
            execution_id = None
            new = outcome.execution
            if new is not None:
                row = execution_ops.pg_execution_row(new, now, instance_id, outcome.rule_ref)
                executions.append(row)
                events.append((outbound_events.execution_created, new, row[5], row[6]))
                execution_id = new.id
            enforcements.append(_pg_enforcement_row(outcome, instance_id, execution_id, now))
        written = [outcome.id for outcome in decision.outcomes]
        events.append(
            (
                outbound_events.enforcements_recorded,
                instance_id,
                decision.final_status,
                decision.outcomes,
                written,
            )
        )
    if executions:
        await conn.executemany(execution_ops.PG_INSERT_EXECUTION, executions)
    if enforcements:
        await conn.executemany(_PG_INSERT_ENFORCEMENT, enforcements)
    traces = [
        (d.instance_id, dumps(list(d.evaluations), "rule evaluations"), now)
        for d in decisions
        if d.evaluations is not None
    ]
    if traces:
        await conn.executemany(_PG_UPSERT_EVALUATIONS, traces)
    if executions:
        await columns.pg_notify(conn, "executions")
    await outbox.pg_emit(
        conn, now, lambda: [e for make, *args in events for e in _as_list(make(*args))]
    )
    return [[outcome.id for outcome in d.outcomes] for d in decisions]


def _as_list(events: Any) -> list[Any]:
    return events if isinstance(events, list) else [events]


async def _pg_record_one(
    conn: asyncpg.Connection,
    instance_id: str,
    lease_token: str,
    outcomes: Sequence[EnforcementOutcome],
    final_status: str,
    now: datetime,
    evaluations: Evaluations | None,
) -> list[str]:
    written = await _pg_enforce(conn, instance_id, lease_token, outcomes, final_status, now)
    if evaluations is not None:
        await conn.execute(
            _PG_UPSERT_EVALUATIONS,
            instance_id,
            dumps(list(evaluations), "rule evaluations"),
            now,
        )
    return written


async def pg_get_evaluations(conn: asyncpg.Connection, instance_id: str) -> list[Any] | None:
    text = await conn.fetchval(
        "SELECT evaluations::text FROM rule_evaluations WHERE trigger_instance_id = $1",
        instance_id,
    )
    return None if text is None else loads(text)


async def pg_queue_stats(conn: asyncpg.Connection) -> dict[str, dict[str, float]]:
    rows = {}
    for queue, (table, status) in QUEUE_WAITING_STATUS.items():
        depth = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE status = $1", status)
        oldest = await conn.fetchval(
            f"SELECT id FROM {table} WHERE status = $1 ORDER BY id LIMIT 1", status
        )
        rows[queue] = (depth, oldest)
    return _stats(rows)


async def _pg_record_each(
    conn: asyncpg.Connection, decisions: Sequence[InstanceDecision], now: datetime
) -> list[Outcome]:
    """Per decision: the enforcement ids written, or its error.

    The common case — every lease still held, no once_per rule — is written set-wise, a
    handful of statements for the whole chunk instead of ten round trips per instance.
    Anything unusual rolls that attempt back and takes the one-savepoint-per-decision
    path, which says which decision failed and why.
    """
    import asyncpg  # the PostgreSQL store is open, so this costs nothing (see the top)

    if decisions and not any(o.once_per_key is not None for d in decisions for o in d.outcomes):
        try:
            async with conn.transaction():  # a savepoint: all of the chunk or none
                return await _pg_record_together(conn, decisions, now)
        except (*DECISION_ERRORS, asyncpg.UniqueViolationError, NotTogether):
            pass
    results: list[Outcome] = []
    for decision in decisions:
        try:
            async with conn.transaction():  # nested: a savepoint
                written = await _pg_record_one(
                    conn,
                    decision.instance_id,
                    decision.lease_token,
                    decision.outcomes,
                    decision.final_status,
                    now,
                    decision.evaluations,
                )
        except DECISION_ERRORS as exc:
            results.append(exc)
            continue
        except asyncpg.UniqueViolationError as exc:
            results.append(Conflict(f"postgresql: {exc}"))
            continue
        results.append(written)
    return results


async def pg_record_enforcements(
    conn: asyncpg.Connection,
    instance_id: str,
    lease_token: str,
    outcomes: Sequence[EnforcementOutcome],
    final_status: str,
    now: datetime,
    evaluations: Evaluations | None,
) -> tuple[list[str], bool]:
    written = await _pg_record_one(
        conn, instance_id, lease_token, outcomes, final_status, now, evaluations
    )
    return written, any(outcome.execution is not None for outcome in outcomes)


async def pg_record_decisions(
    conn: asyncpg.Connection, decisions: Sequence[InstanceDecision], now: datetime
) -> tuple[list[Outcome], bool]:
    results = await _pg_record_each(conn, decisions, now)
    requested = any(
        not isinstance(result, StoreError) and any(o.execution for o in decision.outcomes)
        for decision, result in zip(decisions, results, strict=True)
    )
    return results, requested
