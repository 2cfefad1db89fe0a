"""Canceling executions, for both stores (StackStorm's `st2 execution cancel`).

An execution that has not started (requested, scheduled) becomes `canceled` at once: the
worker holding a scheduled one finds its lease gone when it tries to start it. A running
one becomes `canceling`: its worker learns it from the heartbeat (or at once when the
cancel arrives in its own process), stops the run and records `canceled`. A canceling
execution whose worker died (lease expired) is marked `canceled` by the next claim.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

import asyncpg

from engine.errors import NotFound
from engine.model.records import CANCELED, CANCELING, REQUESTED, RUNNING, SCHEDULED, Execution
from engine.outbound import events as outbound_events
from engine.store import postgres_ops, sqlite_ops
from engine.store.codec import dumps, time_to_text
from engine.store.postgres_outbound import emit as pg_emit
from engine.store.sqlite_outbound import emit as sqlite_emit

# StackStorm's result for an execution canceled before it ran.
CANCELED_RESULT = {"message": "Action canceled by user."}
WORKER_GONE_RESULT = {"message": "Action canceled; its worker stopped before confirming."}


def _missing(execution_id: str) -> NotFound:
    return NotFound(f"execution {execution_id!r} not found")


# --- SQLite (runs in the writer's transaction: read and update are atomic) ----------------


def sqlite_request_cancel(
    conn: sqlite3.Connection, execution_id: str, now: datetime
) -> tuple[Execution, str]:
    """Returns the execution after the request and its status before it."""
    cols = sqlite_ops.EXECUTION_COLUMNS
    row = conn.execute(f"SELECT {cols} FROM executions WHERE id = ?", (execution_id,)).fetchone()
    if row is None:
        raise _missing(execution_id)
    previous = row["status"]
    at = time_to_text(now)
    log = "log = json_insert(log, '$[#]', json(?))"
    if previous in (REQUESTED, SCHEDULED):
        row = conn.execute(
            f"UPDATE executions SET status = ?, result = ?, finished_at = ?, lease_token = NULL,"
            f" lease_expires_at = NULL, updated_at = ?, {log} WHERE id = ? RETURNING {cols}",
            (
                CANCELED,
                dumps(CANCELED_RESULT, "result"),
                at,
                at,
                _entry(CANCELED, now),
                execution_id,
            ),
        ).fetchone()
    elif previous == RUNNING:
        row = conn.execute(
            f"UPDATE executions SET status = ?, updated_at = ?, {log} WHERE id = ?"
            f" RETURNING {cols}",
            (CANCELING, at, _entry(CANCELING, now), execution_id),
        ).fetchone()
    else:
        return sqlite_ops._execution(row), previous
    execution = sqlite_ops._execution(row)
    sqlite_emit(conn, now, lambda: [outbound_events.execution_updated(execution)])
    return execution, previous


def sqlite_claim_executions(
    conn: sqlite3.Connection, limit: int, lease_seconds: float, max_attempts: int, now: datetime
) -> list[Execution]:
    """Settle canceling executions whose worker is gone, then claim as usual."""
    at = time_to_text(now)
    rows = conn.execute(
        f"UPDATE executions SET status = ?, result = ?, finished_at = ?, lease_token = NULL,"
        f" lease_expires_at = NULL, updated_at = ?, log = json_insert(log, '$[#]', json(?))"
        f" WHERE status = ? AND lease_expires_at < ? RETURNING {sqlite_ops.EXECUTION_COLUMNS}",
        (
            CANCELED,
            dumps(WORKER_GONE_RESULT, "result"),
            at,
            at,
            _entry(CANCELED, now),
            CANCELING,
            at,
        ),
    ).fetchall()
    if rows:
        settled = [sqlite_ops._execution(row) for row in rows]
        sqlite_emit(conn, now, lambda: [outbound_events.execution_updated(e) for e in settled])
    return sqlite_ops.claim_executions(conn, limit, lease_seconds, max_attempts, now)


def _entry(status: str, now: datetime) -> str:
    return sqlite_ops._log_param(status, now)


# --- PostgreSQL (inside a transaction; the row is locked before it is read) --------------


async def pg_request_cancel(
    conn: asyncpg.Connection, execution_id: str, now: datetime
) -> tuple[Execution, str]:
    cols = postgres_ops.EXECUTION_COLUMNS
    previous = await conn.fetchval(
        "SELECT status FROM executions WHERE id = $1 FOR UPDATE", execution_id
    )
    if previous is None:
        raise _missing(execution_id)
    row: Any
    if previous in (REQUESTED, SCHEDULED):
        row = await conn.fetchrow(
            "UPDATE executions SET status = $2, result = $3::jsonb, finished_at = $4,"
            " lease_token = NULL, lease_expires_at = NULL, updated_at = now(),"
            f" log = log || $5::jsonb WHERE id = $1 RETURNING {cols}",
            execution_id,
            CANCELED,
            dumps(CANCELED_RESULT, "result"),
            now,
            postgres_ops._log_param(CANCELED, now),
        )
    elif previous == RUNNING:
        row = await conn.fetchrow(
            "UPDATE executions SET status = $2, updated_at = now(), log = log || $3::jsonb"
            f" WHERE id = $1 RETURNING {cols}",
            execution_id,
            CANCELING,
            postgres_ops._log_param(CANCELING, now),
        )
    else:
        row = await conn.fetchrow(f"SELECT {cols} FROM executions WHERE id = $1", execution_id)
        return postgres_ops._execution(row), previous
    execution = postgres_ops._execution(row)
    await pg_emit(conn, now, lambda: [outbound_events.execution_updated(execution)])
    return execution, previous


async def pg_claim_executions(
    conn: asyncpg.Connection, limit: int, lease_seconds: float, max_attempts: int, now: datetime
) -> list[Execution]:
    rows = await conn.fetch(
        "UPDATE executions SET status = $1, result = $2::jsonb, finished_at = $3,"
        " lease_token = NULL, lease_expires_at = NULL, updated_at = now(),"
        " log = log || $4::jsonb"
        " WHERE id IN (SELECT id FROM executions WHERE status = $5"
        "  AND lease_expires_at < now() FOR UPDATE SKIP LOCKED)"
        f" RETURNING {postgres_ops.EXECUTION_COLUMNS}",
        CANCELED,
        dumps(WORKER_GONE_RESULT, "result"),
        now,
        postgres_ops._log_param(CANCELED, now),
        CANCELING,
    )
    if rows:
        settled = [postgres_ops._execution(row) for row in rows]
        await pg_emit(conn, now, lambda: [outbound_events.execution_updated(e) for e in settled])
    return await postgres_ops.claim_executions(conn, limit, lease_seconds, max_attempts, now)
