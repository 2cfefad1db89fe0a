"""Executions, both dialects: requested (by a rule decision, the API or re-emit), claimed
with a lease (engine.store.ops.execution_claims), started, heartbeaten, finished — and
canceled (StackStorm's `st2 execution cancel`).

An execution that has not started (requested, delayed, scheduled), or an inquiry waiting
for its response (pending), becomes `canceled` at once: the
worker holding a scheduled one finds its lease gone when it tries to start it. A running
one becomes `canceling`: its worker learns it from the heartbeat (or at once when the
cancel arrives in its own process), stops the run and records `canceled`. A canceling
execution whose worker died (lease expired) is marked `canceled` by the next claim.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from engine.errors import NotFound
from engine.model.records import (
    CANCELED,
    CANCELING,
    DELAYED,
    INQUIRY_PENDING,
    REQUESTED,
    RUNNING,
    SCHEDULED,
    Execution,
    NewExecution,
)
from engine.outbound import events as outbound_events
from engine.store import codec
from engine.store.codec import dumps, time_to_text
from engine.store.ops import columns, generic_triggers, lineage, outbox

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg

# StackStorm's result for an execution canceled before it ran.
CANCELED_RESULT = {"message": "Action canceled by user."}


def _missing(execution_id: str) -> NotFound:
    return NotFound(f"execution {execution_id!r} not found")


# --- SQLite (plain functions run on the store's threads, in its transactions) ---


def sqlite_insert(
    conn: sqlite3.Connection,
    new: NewExecution,
    now: datetime,
    instance_id: str | None = None,
    rule_ref: str | None = None,
) -> None:
    linked_instance, linked_rule = codec.execution_links(new, instance_id, rule_ref)
    at = time_to_text(now)
    conn.execute(
        "INSERT INTO executions (id, action, parameters, status, context, trigger_instance_id,"
        " rule_ref, created_at, attempt, log, updated_at, parent_id, run_after)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?)",
        (
            new.id,
            new.action,
            dumps(new.parameters, "execution parameters"),
            REQUESTED,
            dumps(new.context, "execution context"),
            linked_instance,
            linked_rule,
            at,
            dumps([codec.log_entry(REQUESTED, now)]),
            at,
            new.parent,
            time_to_text(now + timedelta(seconds=new.delay)) if new.delay else None,
        ),
    )
    outbox.sqlite_emit(
        conn, now, lambda: [outbound_events.execution_created(new, linked_instance, linked_rule)]
    )


def sqlite_start(
    conn: sqlite3.Connection, execution_id: str, lease_token: str, now: datetime
) -> Execution:
    at = time_to_text(now)
    row = conn.execute(
        "UPDATE executions SET status = ?, started_at = ?, updated_at = ?,"
        f" {columns.SQLITE_APPEND_LOG}"
        " WHERE id = ? AND lease_token = ? AND status = 'scheduled'"
        f" RETURNING {columns.SQLITE_EXECUTION_COLUMNS}",
        (RUNNING, at, at, columns.sqlite_log_param(RUNNING, now), execution_id, lease_token),
    ).fetchone()
    if row is None:
        raise columns.sqlite_missing_or_lost(conn, "executions", "execution", execution_id)
    execution = columns.sqlite_execution(row)
    outbox.sqlite_emit(conn, now, lambda: [outbound_events.execution_updated(execution)])
    return execution


def sqlite_heartbeat(
    conn: sqlite3.Connection,
    execution_id: str,
    lease_token: str,
    lease_seconds: float,
    now: datetime,
) -> str:
    row = conn.execute(
        "UPDATE executions SET lease_expires_at = ?, updated_at = ?"
        " WHERE id = ? AND lease_token = ? AND status IN ('scheduled', 'running', 'canceling')"
        " RETURNING status",
        (
            time_to_text(now + timedelta(seconds=lease_seconds)),
            time_to_text(now),
            execution_id,
            lease_token,
        ),
    ).fetchone()
    if row is None:
        raise columns.sqlite_missing_or_lost(conn, "executions", "execution", execution_id)
    return row["status"]


def sqlite_finish(
    conn: sqlite3.Connection,
    execution_id: str,
    lease_token: str,
    status: str,
    result_json: str,
    now: datetime,
    generic: generic_triggers.GenericSource | None = None,
) -> Execution:
    at = time_to_text(now)
    row = conn.execute(
        "UPDATE executions SET status = ?, result = ?, finished_at = ?, lease_token = NULL,"
        f" lease_expires_at = NULL, updated_at = ?, {columns.SQLITE_APPEND_LOG}"
        " WHERE id = ? AND lease_token = ? AND status IN ('scheduled', 'running', 'canceling')"
        f" RETURNING {columns.SQLITE_EXECUTION_COLUMNS}",
        (
            status,
            result_json,
            at,
            at,
            columns.sqlite_log_param(status, now),
            execution_id,
            lease_token,
        ),
    ).fetchone()
    if row is None:
        raise columns.sqlite_missing_or_lost(conn, "executions", "execution", execution_id)
    execution = columns.sqlite_execution(row)
    lineage.sqlite_mark_parents_due(conn, [execution])
    outbox.sqlite_emit(conn, now, lambda: [outbound_events.execution_updated(execution)])
    generic_triggers.sqlite_fire(conn, execution, generic, now)
    return execution


def sqlite_create(conn: sqlite3.Connection, new: NewExecution, now: datetime) -> Execution:
    sqlite_insert(conn, new, now)
    return sqlite_get(conn, new.id)


def sqlite_get(conn: sqlite3.Connection, execution_id: str) -> Execution:
    row = conn.execute(
        f"SELECT {columns.SQLITE_EXECUTION_COLUMNS} FROM executions WHERE id = ?", (execution_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"execution {execution_id!r} not found")
    return columns.sqlite_execution(row)


def sqlite_request_cancel(
    conn: sqlite3.Connection,
    execution_id: str,
    now: datetime,
    generic: generic_triggers.GenericSource | None = None,
) -> tuple[Execution, str]:
    """Returns the execution after the request and its status before it."""
    cols = columns.SQLITE_EXECUTION_COLUMNS
    row = conn.execute(f"SELECT {cols} FROM executions WHERE id = ?", (execution_id,)).fetchone()
    if row is None:
        raise _missing(execution_id)
    previous = row["status"]
    at = time_to_text(now)
    log = "log = json_insert(log, '$[#]', json(?))"
    if previous in (REQUESTED, SCHEDULED, DELAYED, INQUIRY_PENDING):
        row = conn.execute(
            f"UPDATE executions SET status = ?, result = ?, finished_at = ?, lease_token = NULL,"
            f" lease_expires_at = NULL, updated_at = ?, {log} WHERE id = ? RETURNING {cols}",
            (
                CANCELED,
                dumps(CANCELED_RESULT, "result"),
                at,
                at,
                columns.sqlite_log_param(CANCELED, now),
                execution_id,
            ),
        ).fetchone()
    elif previous == RUNNING:
        row = conn.execute(
            f"UPDATE executions SET status = ?, updated_at = ?, {log} WHERE id = ?"
            f" RETURNING {cols}",
            (CANCELING, at, columns.sqlite_log_param(CANCELING, now), execution_id),
        ).fetchone()
    else:
        return columns.sqlite_execution(row), previous
    execution = columns.sqlite_execution(row)
    ended = [execution] if execution.status == CANCELED else []
    lineage.sqlite_mark_parents_due(conn, ended)
    generic_triggers.sqlite_fire_all(conn, ended, generic, now)
    outbox.sqlite_emit(conn, now, lambda: [outbound_events.execution_updated(execution)])
    return execution, previous


# --- PostgreSQL (coroutines on a pool connection, in a transaction) ---


async def pg_insert(
    conn: asyncpg.Connection,
    new: NewExecution,
    now: datetime,
    instance_id: str | None = None,
    rule_ref: str | None = None,
) -> None:
    row = pg_execution_row(new, now, instance_id, rule_ref)
    await conn.execute(PG_INSERT_EXECUTION, *row)
    await outbox.pg_emit(
        conn, now, lambda: [outbound_events.execution_created(new, row[5], row[6])]
    )


PG_INSERT_EXECUTION = (
    "INSERT INTO executions (id, action, parameters, status, context, trigger_instance_id,"
    " rule_ref, created_at, attempt, log, updated_at, parent_id, run_after)"
    " VALUES ($1, $2, $3::jsonb, $4, $5::jsonb, $6, $7, $8, 1, $9::jsonb, now(), $10,"
    " CASE WHEN $11::float8 > 0 THEN now() + make_interval(secs => $11::float8) END)"
)


def pg_execution_row(
    new: NewExecution, now: datetime, instance_id: str | None, rule_ref: str | None
) -> tuple[Any, ...]:
    """_INSERT_EXECUTION's parameters; [5] and [6] are the linked instance and rule."""
    linked_instance, linked_rule = codec.execution_links(new, instance_id, rule_ref)
    return (
        new.id,
        new.action,
        dumps(new.parameters, "execution parameters"),
        REQUESTED,
        dumps(new.context, "execution context"),
        linked_instance,
        linked_rule,
        now,
        columns.pg_log_param(REQUESTED, now),
        new.parent,
        float(new.delay),
    )


async def pg_start(
    conn: asyncpg.Connection, execution_id: str, lease_token: str, now: datetime
) -> Execution:
    row = await conn.fetchrow(
        "UPDATE executions SET status = $3, started_at = $4, updated_at = now(),"
        " log = log || $5::jsonb"
        " WHERE id = $1 AND lease_token = $2 AND status = 'scheduled'"
        f" RETURNING {columns.PG_EXECUTION_COLUMNS}",
        execution_id,
        lease_token,
        RUNNING,
        now,
        columns.pg_log_param(RUNNING, now),
    )
    if row is None:
        raise await columns.pg_missing_or_lost(conn, "executions", "execution", execution_id)
    execution = columns.pg_execution(row)
    await outbox.pg_emit(conn, now, lambda: [outbound_events.execution_updated(execution)])
    return execution


async def pg_heartbeat(
    conn: asyncpg.Connection,
    execution_id: str,
    lease_token: str,
    lease_seconds: float,
    now: datetime,
) -> str:
    # `now` is unused: leases follow the database's clock, shared by every process.
    status = await conn.fetchval(
        "UPDATE executions SET lease_expires_at = now() + make_interval(secs => $3),"
        " updated_at = now()"
        " WHERE id = $1 AND lease_token = $2 AND status IN ('scheduled', 'running', 'canceling')"
        " RETURNING status",
        execution_id,
        lease_token,
        float(lease_seconds),
    )
    if status is None:
        raise await columns.pg_missing_or_lost(conn, "executions", "execution", execution_id)
    return status


async def pg_finish(
    conn: asyncpg.Connection,
    execution_id: str,
    lease_token: str,
    status: str,
    result_json: str,
    now: datetime,
    generic: generic_triggers.GenericSource | None = None,
) -> Execution:
    row = await conn.fetchrow(
        "UPDATE executions SET status = $3, result = $4::jsonb, finished_at = $5,"
        " lease_token = NULL, lease_expires_at = NULL, updated_at = now(),"
        " log = log || $6::jsonb"
        " WHERE id = $1 AND lease_token = $2 AND status IN ('scheduled', 'running', 'canceling')"
        f" RETURNING {columns.PG_EXECUTION_COLUMNS}",
        execution_id,
        lease_token,
        status,
        result_json,
        now,
        columns.pg_log_param(status, now),
    )
    if row is None:
        raise await columns.pg_missing_or_lost(conn, "executions", "execution", execution_id)
    execution = columns.pg_execution(row)
    await lineage.pg_mark_parents_due(conn, [execution])
    await outbox.pg_emit(conn, now, lambda: [outbound_events.execution_updated(execution)])
    await generic_triggers.pg_fire(conn, execution, generic)
    return execution


async def pg_create(conn: asyncpg.Connection, new: NewExecution, now: datetime) -> Execution:
    await pg_insert(conn, new, now)
    await columns.pg_notify(conn, "executions")
    return await pg_get(conn, new.id)


async def pg_get(conn: asyncpg.Connection, execution_id: str) -> Execution:
    row = await conn.fetchrow(
        f"SELECT {columns.PG_EXECUTION_COLUMNS} FROM executions WHERE id = $1", execution_id
    )
    if row is None:
        raise NotFound(f"execution {execution_id!r} not found")
    return columns.pg_execution(row)


async def pg_request_cancel(
    conn: asyncpg.Connection,
    execution_id: str,
    now: datetime,
    generic: generic_triggers.GenericSource | None = None,
) -> tuple[Execution, str]:
    cols = columns.PG_EXECUTION_COLUMNS
    previous = await conn.fetchval(
        "SELECT status FROM executions WHERE id = $1 FOR UPDATE", execution_id
    )
    if previous is None:
        raise _missing(execution_id)
    row: Any
    if previous in (REQUESTED, SCHEDULED, DELAYED, INQUIRY_PENDING):
        row = await conn.fetchrow(
            "UPDATE executions SET status = $2, result = $3::jsonb, finished_at = $4,"
            " lease_token = NULL, lease_expires_at = NULL, updated_at = now(),"
            f" log = log || $5::jsonb WHERE id = $1 RETURNING {cols}",
            execution_id,
            CANCELED,
            dumps(CANCELED_RESULT, "result"),
            now,
            columns.pg_log_param(CANCELED, now),
        )
    elif previous == RUNNING:
        row = await conn.fetchrow(
            "UPDATE executions SET status = $2, updated_at = now(), log = log || $3::jsonb"
            f" WHERE id = $1 RETURNING {cols}",
            execution_id,
            CANCELING,
            columns.pg_log_param(CANCELING, now),
        )
    else:
        row = await conn.fetchrow(f"SELECT {cols} FROM executions WHERE id = $1", execution_id)
        return columns.pg_execution(row), previous
    execution = columns.pg_execution(row)
    ended = [execution] if execution.status == CANCELED else []
    await lineage.pg_mark_parents_due(conn, ended)
    await generic_triggers.pg_fire_all(conn, ended, generic)
    await outbox.pg_emit(conn, now, lambda: [outbound_events.execution_updated(execution)])
    return execution, previous
