"""Inquiries, both dialects: opened by a `core.ask` run, listed, answered, timed out.

As in StackStorm an inquiry is its ask's execution, `pending`, whose result holds what
was asked (engine.packs.inquiry). The `inquiries` row marks it one, and holds when it
expires and who answered. Each change is one transaction with what follows from it:
- opening ends the worker's hold (no lease: nothing claims a pending execution), makes
  the parent workflow's run due, whose step pauses it once every active task waits, and
  stores the `core.st2.generic.inquiry` trigger instance when a rule listens;
- an answer ends the execution `succeeded` with the response, makes the parent's run due
  and moves the paused workflows up the tree to `resuming` (StackStorm resumes them);
- expiry ends it `timeout` with its result unchanged, and resumes likewise.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from engine.errors import Conflict, NotFound
from engine.model.records import (
    INQUIRY_PENDING,
    SUCCEEDED,
    TIMEOUT,
    Execution,
    NewTriggerInstance,
    Page,
)
from engine.outbound import events as outbound_events
from engine.store import codec
from engine.store.codec import time_to_text
from engine.store.ops import columns, generic_triggers, instances, lineage, outbox

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg

# A workflow tree is at most this deep (engine.store.ops.workflows.MAX_CANCEL_DEPTH).
MAX_DEPTH = 32
# Expired inquiries ended per transaction.
EXPIRE_BATCH = 100


def _missing(execution_id: str) -> NotFound:
    return NotFound(f"inquiry {execution_id!r} not found")


def _refused(execution_id: str, status: str) -> Conflict:
    # StackStorm's words (st2common.exceptions.inquiry).
    if status == TIMEOUT:
        return Conflict(f'Inquiry "{execution_id}" timed out and cannot be responded to.')
    if status == SUCCEEDED:
        return Conflict(f'Inquiry "{execution_id}" has already been responded to.')
    return Conflict(f'Inquiry "{execution_id}" is {status} and cannot be responded to.')


# --- SQLite (plain functions run on the store's threads, in its transactions) ---


def sqlite_open(
    conn: sqlite3.Connection,
    execution_id: str,
    lease_token: str,
    result_json: str,
    expires_at: datetime | None,
    now: datetime,
    triggers: Sequence[NewTriggerInstance] = (),
) -> Execution:
    at = time_to_text(now)
    row = conn.execute(
        "UPDATE executions SET status = ?, result = ?, lease_token = NULL,"
        f" lease_expires_at = NULL, updated_at = ?, {columns.SQLITE_APPEND_LOG}"
        " WHERE id = ? AND lease_token = ? AND status = 'running'"
        f" RETURNING {columns.SQLITE_EXECUTION_COLUMNS}",
        (
            INQUIRY_PENDING,
            result_json,
            at,
            columns.sqlite_log_param(INQUIRY_PENDING, now),
            execution_id,
            lease_token,
        ),
    ).fetchone()
    if row is None:
        raise columns.sqlite_missing_or_lost(conn, "executions", "execution", execution_id)
    execution = columns.sqlite_execution(row)
    conn.execute(
        "INSERT INTO inquiries (execution_id, expires_at, created_at) VALUES (?, ?, ?)",
        (execution_id, None if expires_at is None else time_to_text(expires_at), at),
    )
    if triggers:
        instances.sqlite_insert(conn, [codec.prepare_trigger_instance(t) for t in triggers], now)
    lineage.sqlite_mark_parents_due(conn, [execution])
    outbox.sqlite_emit(conn, now, lambda: [outbound_events.execution_updated(execution)])
    return execution


def sqlite_list(conn: sqlite3.Connection, limit: int, offset: int) -> Page:
    cols = ", ".join(f"e.{name.strip()}" for name in columns.SQLITE_EXECUTION_COLUMNS.split(","))
    rows = conn.execute(
        f"SELECT {cols} FROM inquiries i JOIN executions e ON e.id = i.execution_id"
        " WHERE e.status = ? ORDER BY i.created_at DESC, e.id DESC LIMIT ? OFFSET ?",
        (INQUIRY_PENDING, limit, offset),
    ).fetchall()
    total = conn.execute(
        "SELECT count(*) FROM inquiries i JOIN executions e ON e.id = i.execution_id"
        " WHERE e.status = ?",
        (INQUIRY_PENDING,),
    ).fetchone()[0]
    return Page([columns.sqlite_execution(row) for row in rows], total)


def sqlite_get(conn: sqlite3.Connection, execution_id: str) -> Execution:
    row = conn.execute(
        f"SELECT {columns.SQLITE_EXECUTION_COLUMNS} FROM executions"
        " WHERE id = ? AND id IN (SELECT execution_id FROM inquiries)",
        (execution_id,),
    ).fetchone()
    if row is None:
        raise _missing(execution_id)
    return columns.sqlite_execution(row)


def sqlite_respond(
    conn: sqlite3.Connection,
    execution_id: str,
    result_json: str,
    responder: str | None,
    now: datetime,
    generic: generic_triggers.GenericSource | None = None,
) -> Execution:
    execution = sqlite_get(conn, execution_id)
    if execution.status != INQUIRY_PENDING:
        raise _refused(execution_id, execution.status)
    at = time_to_text(now)
    row = conn.execute(
        "UPDATE executions SET status = ?, result = ?, finished_at = ?, updated_at = ?,"
        f" {columns.SQLITE_APPEND_LOG} WHERE id = ? AND status = ?"
        f" RETURNING {columns.SQLITE_EXECUTION_COLUMNS}",
        (
            SUCCEEDED,
            result_json,
            at,
            at,
            columns.sqlite_log_param(SUCCEEDED, now),
            execution_id,
            INQUIRY_PENDING,
        ),
    ).fetchone()
    answered = columns.sqlite_execution(row)
    conn.execute(
        "UPDATE inquiries SET responded_by = ?, responded_at = ? WHERE execution_id = ?",
        (responder, at, execution_id),
    )
    _sqlite_ended(conn, answered, now, generic)
    return answered


def sqlite_expire(
    conn: sqlite3.Connection, now: datetime, generic: generic_triggers.GenericSource | None = None
) -> list[Execution]:
    at = time_to_text(now)
    rows = conn.execute(
        "UPDATE executions SET status = ?, finished_at = ?, updated_at = ?,"
        f" {columns.SQLITE_APPEND_LOG} WHERE id IN (SELECT i.execution_id FROM inquiries i"
        "  JOIN executions e ON e.id = i.execution_id WHERE e.status = ?"
        "  AND i.expires_at IS NOT NULL AND i.expires_at < ? LIMIT ?)"
        f" RETURNING {columns.SQLITE_EXECUTION_COLUMNS}",
        (
            TIMEOUT,
            at,
            at,
            columns.sqlite_log_param(TIMEOUT, now),
            INQUIRY_PENDING,
            at,
            EXPIRE_BATCH,
        ),
    ).fetchall()
    expired = [columns.sqlite_execution(row) for row in rows]
    for execution in expired:
        _sqlite_ended(conn, execution, now, generic)
    return expired


def _sqlite_ended(
    conn: sqlite3.Connection,
    execution: Execution,
    now: datetime,
    generic: generic_triggers.GenericSource | None,
) -> None:
    """What any end of an execution brings (engine.store.ops.executions.sqlite_finish),
    and the workflows above it resumed."""
    lineage.sqlite_mark_parents_due(conn, [execution])
    generic_triggers.sqlite_fire(conn, execution, generic, now)
    sqlite_resume_ancestors(conn, execution.parent, now)
    outbox.sqlite_emit(conn, now, lambda: [outbound_events.execution_updated(execution)])


def sqlite_resume_ancestors(conn: sqlite3.Connection, parent: str | None, now: datetime) -> None:
    """The paused (or pausing) workflows from `parent` up become `resuming`: StackStorm
    resumes them when an inquiry under them is answered or expires."""
    for _ in range(MAX_DEPTH):
        if parent is None:
            return
        row = conn.execute(
            "UPDATE executions SET status = 'resuming', updated_at = ?,"
            f" {columns.SQLITE_APPEND_LOG}"
            " WHERE id = ? AND status IN ('pausing', 'paused') RETURNING parent_id",
            (time_to_text(now), columns.sqlite_log_param("resuming", now), parent),
        ).fetchone()
        if row is None:
            return
        conn.execute("UPDATE workflow_runs SET due = 1 WHERE execution_id = ?", (parent,))
        parent = row["parent_id"]


# --- PostgreSQL (coroutines on a pool connection, in a transaction) ---


async def pg_open(
    conn: asyncpg.Connection,
    execution_id: str,
    lease_token: str,
    result_json: str,
    expires_at: datetime | None,
    now: datetime,
    triggers: Sequence[NewTriggerInstance] = (),
) -> Execution:
    row = await conn.fetchrow(
        "UPDATE executions SET status = $3, result = $4::jsonb, lease_token = NULL,"
        " lease_expires_at = NULL, updated_at = now(), log = log || $5::jsonb"
        " WHERE id = $1 AND lease_token = $2 AND status = 'running'"
        f" RETURNING {columns.PG_EXECUTION_COLUMNS}",
        execution_id,
        lease_token,
        INQUIRY_PENDING,
        result_json,
        columns.pg_log_param(INQUIRY_PENDING, now),
    )
    if row is None:
        raise await columns.pg_missing_or_lost(conn, "executions", "execution", execution_id)
    execution = columns.pg_execution(row)
    await conn.execute(
        "INSERT INTO inquiries (execution_id, expires_at, created_at) VALUES ($1, $2, $3)",
        execution_id,
        expires_at,
        now,
    )
    if triggers:
        await instances.pg_insert(conn, [codec.prepare_trigger_instance(t) for t in triggers])
    await lineage.pg_mark_parents_due(conn, [execution])
    await outbox.pg_emit(conn, now, lambda: [outbound_events.execution_updated(execution)])
    return execution


async def pg_list(conn: asyncpg.Connection, limit: int, offset: int) -> Page:
    cols = ", ".join(f"e.{name.strip()}" for name in columns.PG_EXECUTION_COLUMNS.split(","))
    rows = await conn.fetch(
        f"SELECT {cols} FROM inquiries i JOIN executions e ON e.id = i.execution_id"
        " WHERE e.status = $1 ORDER BY i.created_at DESC, e.id DESC LIMIT $2 OFFSET $3",
        INQUIRY_PENDING,
        limit,
        offset,
    )
    total = await conn.fetchval(
        "SELECT count(*) FROM inquiries i JOIN executions e ON e.id = i.execution_id"
        " WHERE e.status = $1",
        INQUIRY_PENDING,
    )
    return Page([columns.pg_execution(row) for row in rows], total)


async def pg_get(conn: asyncpg.Connection, execution_id: str, lock: bool = False) -> Execution:
    row = await conn.fetchrow(
        f"SELECT {columns.PG_EXECUTION_COLUMNS} FROM executions"
        " WHERE id = $1 AND id IN (SELECT execution_id FROM inquiries)"
        + (" FOR UPDATE" if lock else ""),
        execution_id,
    )
    if row is None:
        raise _missing(execution_id)
    return columns.pg_execution(row)


async def pg_respond(
    conn: asyncpg.Connection,
    execution_id: str,
    result_json: str,
    responder: str | None,
    now: datetime,
    generic: generic_triggers.GenericSource | None = None,
) -> Execution:
    execution = await pg_get(conn, execution_id, lock=True)
    if execution.status != INQUIRY_PENDING:
        raise _refused(execution_id, execution.status)
    row = await conn.fetchrow(
        "UPDATE executions SET status = $2, result = $3::jsonb, finished_at = $4,"
        " updated_at = now(), log = log || $5::jsonb"
        f" WHERE id = $1 RETURNING {columns.PG_EXECUTION_COLUMNS}",
        execution_id,
        SUCCEEDED,
        result_json,
        now,
        columns.pg_log_param(SUCCEEDED, now),
    )
    answered = columns.pg_execution(row)
    await conn.execute(
        "UPDATE inquiries SET responded_by = $2, responded_at = $3 WHERE execution_id = $1",
        execution_id,
        responder,
        now,
    )
    await _pg_ended(conn, answered, now, generic)
    return answered


async def pg_expire(
    conn: asyncpg.Connection, now: datetime, generic: generic_triggers.GenericSource | None = None
) -> list[Execution]:
    rows = await conn.fetch(
        "UPDATE executions SET status = $1, finished_at = $2, updated_at = now(),"
        " log = log || $3::jsonb WHERE id IN (SELECT i.execution_id FROM inquiries i"
        "  JOIN executions e ON e.id = i.execution_id WHERE e.status = $4"
        "  AND i.expires_at IS NOT NULL AND i.expires_at < $2"
        "  ORDER BY i.execution_id LIMIT $5 FOR UPDATE OF e SKIP LOCKED)"
        f" RETURNING {columns.PG_EXECUTION_COLUMNS}",
        TIMEOUT,
        now,
        columns.pg_log_param(TIMEOUT, now),
        INQUIRY_PENDING,
        EXPIRE_BATCH,
    )
    expired = [columns.pg_execution(row) for row in rows]
    for execution in expired:
        await _pg_ended(conn, execution, now, generic)
    return expired


async def _pg_ended(
    conn: asyncpg.Connection,
    execution: Execution,
    now: datetime,
    generic: generic_triggers.GenericSource | None,
) -> None:
    await lineage.pg_mark_parents_due(conn, [execution])
    await generic_triggers.pg_fire(conn, execution, generic)
    await pg_resume_ancestors(conn, execution.parent, now)
    await outbox.pg_emit(conn, now, lambda: [outbound_events.execution_updated(execution)])


async def pg_resume_ancestors(conn: asyncpg.Connection, parent: str | None, now: datetime) -> None:
    for _ in range(MAX_DEPTH):
        if parent is None:
            return
        row = await conn.fetchrow(
            "UPDATE executions SET status = 'resuming', updated_at = now(),"
            " log = log || $2::jsonb WHERE id = $1 AND status IN ('pausing', 'paused')"
            " RETURNING parent_id",
            parent,
            columns.pg_log_param("resuming", now),
        )
        if row is None:
            return
        await conn.execute("UPDATE workflow_runs SET due = true WHERE execution_id = $1", parent)
        await columns.pg_notify(conn, "workflows")
        parent = row["parent_id"]
