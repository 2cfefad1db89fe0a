"""Claiming executions, both dialects: the requested ones and those whose lease ran out
(attempt 2, or abandoned after the last attempt), after settling as canceled the canceling
ones whose worker is gone.

An execution with a `run_after` (a workflow task's delay) is not claimed before it. The
statements that create, start, heartbeat, finish and cancel an execution are
engine.store.ops.executions'.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from engine.model.records import (
    ABANDONED,
    CANCELED,
    CANCELING,
    SCHEDULED,
    Execution,
)
from engine.outbound import events as outbound_events
from engine.store.codec import dumps, time_to_text
from engine.store.ops import columns, generic_triggers, lineage, outbox
from engine.store.ops.generic_triggers import GenericSource

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg

WORKER_GONE_RESULT = {"message": "Action canceled; its worker stopped before confirming."}


# --- SQLite ------------------------------------------------------------------------------


def sqlite_claim(
    conn: sqlite3.Connection,
    limit: int,
    lease_seconds: float,
    max_attempts: int,
    now: datetime,
    generic: GenericSource | None = None,
    only_actions: list[str] | None = None,
) -> list[Execution]:
    """Settle canceling executions whose worker is gone, then claim as usual (only
    executions of `only_actions` when given)."""
    at = time_to_text(now)
    rows = conn.execute(
        f"UPDATE executions SET status = ?, result = ?, finished_at = ?, lease_token = NULL,"
        f" lease_expires_at = NULL, updated_at = ?, log = json_insert(log, '$[#]', json(?))"
        f" WHERE status = ? AND lease_expires_at < ? RETURNING {columns.SQLITE_EXECUTION_COLUMNS}",
        (
            CANCELED,
            dumps(WORKER_GONE_RESULT, "result"),
            at,
            at,
            columns.sqlite_log_param(CANCELED, now),
            CANCELING,
            at,
        ),
    ).fetchall()
    if rows:
        settled = [columns.sqlite_execution(row) for row in rows]
        lineage.sqlite_mark_parents_due(conn, settled)
        generic_triggers.sqlite_fire_all(conn, settled, generic, now)
        outbox.sqlite_emit(
            conn, now, lambda: [outbound_events.execution_updated(e) for e in settled]
        )
    return _sqlite_claim_due(conn, limit, lease_seconds, max_attempts, now, generic, only_actions)


def _sqlite_claim_due(
    conn: sqlite3.Connection,
    limit: int,
    lease_seconds: float,
    max_attempts: int,
    now: datetime,
    generic: GenericSource | None,
    only_actions: list[str] | None,
) -> list[Execution]:
    at = time_to_text(now)
    active = (
        "SELECT id FROM executions INDEXED BY executions_active"
        " WHERE status IN ('requested', 'scheduled', 'running')"
    )
    if only_actions is not None:
        # A literal list of quoted names: bound parameters would shift every other one.
        active += f" AND action IN ({', '.join(map(_sql_text, only_actions)) or 'NULL'})"
    # Only an expired `running` execution was a failed attempt (its action may have run);
    # an expired `scheduled` one never started, so it is claimed again at the same attempt.
    abandoned = conn.execute(
        f"UPDATE executions SET status = ?, finished_at = ?, lease_token = NULL,"
        f" lease_expires_at = NULL, updated_at = ?, {columns.SQLITE_APPEND_LOG}"
        f" WHERE id IN ({active} AND status = 'running' AND lease_expires_at < ?"
        "  AND attempt >= ?)"
        f" RETURNING {columns.SQLITE_EXECUTION_COLUMNS}",
        (ABANDONED, at, at, columns.sqlite_log_param(ABANDONED, now), at, max_attempts),
    ).fetchall()
    rows = conn.execute(
        "UPDATE executions SET"
        " attempt = CASE WHEN status = 'running' THEN attempt + 1 ELSE attempt END,"
        " status = ?, lease_token = lower(hex(randomblob(16))), lease_expires_at = ?,"
        f" updated_at = ?, {columns.SQLITE_APPEND_LOG}"
        f" WHERE id IN ({active}"
        "  AND (status = 'requested' AND (run_after IS NULL OR run_after <= ?)"
        "   OR lease_expires_at < ?)"
        "  ORDER BY id LIMIT ?)"
        f" RETURNING {columns.SQLITE_EXECUTION_COLUMNS}",
        (
            SCHEDULED,
            time_to_text(now + timedelta(seconds=lease_seconds)),
            at,
            columns.sqlite_log_param(SCHEDULED, now),
            at,
            at,
            limit,
        ),
    ).fetchall()
    given_up = [columns.sqlite_execution(row) for row in abandoned]
    lineage.sqlite_mark_parents_due(conn, given_up)
    generic_triggers.sqlite_fire_all(conn, given_up, generic, now)
    if abandoned or rows:
        changed = [*abandoned, *rows]
        outbox.sqlite_emit(
            conn,
            now,
            lambda: [
                outbound_events.execution_updated(columns.sqlite_execution(r)) for r in changed
            ],
        )
    return sorted((columns.sqlite_execution(row) for row in rows), key=lambda ex: ex.id)


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# --- PostgreSQL --------------------------------------------------------------------------


async def pg_claim(
    conn: asyncpg.Connection,
    limit: int,
    lease_seconds: float,
    max_attempts: int,
    now: datetime,
    generic: GenericSource | None = None,
    only_actions: list[str] | None = None,
) -> list[Execution]:
    rows = await conn.fetch(
        "UPDATE executions SET status = $1, result = $2::jsonb, finished_at = $3,"
        " lease_token = NULL, lease_expires_at = NULL, updated_at = now(),"
        " log = log || $4::jsonb"
        " WHERE id IN (SELECT id FROM executions WHERE status = $5"
        "  AND lease_expires_at < now() FOR UPDATE SKIP LOCKED)"
        f" RETURNING {columns.PG_EXECUTION_COLUMNS}",
        CANCELED,
        dumps(WORKER_GONE_RESULT, "result"),
        now,
        columns.pg_log_param(CANCELED, now),
        CANCELING,
    )
    if rows:
        settled = [columns.pg_execution(row) for row in rows]
        await lineage.pg_mark_parents_due(conn, settled)
        await generic_triggers.pg_fire_all(conn, settled, generic)
        await outbox.pg_emit(
            conn, now, lambda: [outbound_events.execution_updated(e) for e in settled]
        )
    return await _pg_claim_due(conn, limit, lease_seconds, max_attempts, now, generic, only_actions)


async def _pg_claim_due(
    conn: asyncpg.Connection,
    limit: int,
    lease_seconds: float,
    max_attempts: int,
    now: datetime,
    generic: GenericSource | None,
    only_actions: list[str] | None,
) -> list[Execution]:
    # Only an expired `running` execution was a failed attempt (its action may have run);
    # an expired `scheduled` one never started, so it is claimed again at the same attempt.
    abandoned = await conn.fetch(
        "UPDATE executions SET status = $1, finished_at = $2, lease_token = NULL,"
        " lease_expires_at = NULL, updated_at = now(), log = log || $3::jsonb"
        " WHERE id IN (SELECT id FROM executions WHERE status = 'running'"
        "  AND lease_expires_at < now() AND attempt >= $4"
        "  AND ($5::text[] IS NULL OR action = ANY($5::text[])) FOR UPDATE SKIP LOCKED)"
        f" RETURNING {columns.PG_EXECUTION_COLUMNS}",
        ABANDONED,
        now,
        columns.pg_log_param(ABANDONED, now),
        max_attempts,
        only_actions,
    )
    rows = await conn.fetch(
        "UPDATE executions SET"
        " attempt = CASE WHEN status = 'running' THEN attempt + 1 ELSE attempt END,"
        f" status = $1, lease_token = {columns.PG_NEW_TOKEN},"
        " lease_expires_at = now() + make_interval(secs => $2), updated_at = now(),"
        " log = log || $3::jsonb"
        " WHERE id IN (SELECT id FROM executions"
        "  WHERE status IN ('requested', 'scheduled', 'running')"
        "  AND (status = 'requested' AND (run_after IS NULL OR run_after <= now())"
        "   OR lease_expires_at < now())"
        "  AND ($5::text[] IS NULL OR action = ANY($5::text[]))"
        "  ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)"
        f" RETURNING {columns.PG_EXECUTION_COLUMNS}",
        SCHEDULED,
        float(lease_seconds),
        columns.pg_log_param(SCHEDULED, now),
        limit,
        only_actions,
    )
    given_up = [columns.pg_execution(row) for row in abandoned]
    await lineage.pg_mark_parents_due(conn, given_up)
    await generic_triggers.pg_fire_all(conn, given_up, generic)
    if abandoned or rows:
        changed = [*abandoned, *rows]
        await outbox.pg_emit(
            conn,
            now,
            lambda: [outbound_events.execution_updated(columns.pg_execution(r)) for r in changed],
        )
    return sorted((columns.pg_execution(row) for row in rows), key=lambda ex: ex.id)
