"""Pausing and resuming a workflow, both dialects (StackStorm's `st2 execution pause` /
`resume`: `PUT /api/v1/executions/<id>` with `{"status": "pausing" | "resuming"}`).

A request only moves the status and makes the run due, for the workflow and down its
subworkflows; the workflows worker's steps do the rest in the conductor: a `pausing`
workflow starts no new task and becomes `paused` once its running ones have ended; a
`resuming` one requests what was held back and becomes `running`. A task run that is
not a workflow is never paused: it runs to its end. A subworkflow resumed on its own
resumes the paused workflows above it too, as StackStorm does (engine.workers.
workflow_settling says when a parent is paused or running again).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import TYPE_CHECKING

from engine.errors import Conflict, NotFound
from engine.model.records import RUNNING, Execution
from engine.store.codec import time_to_text
from engine.store.ops import columns, executions

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg

PAUSING, PAUSED, RESUMING = "pausing", "paused", "resuming"
# Which statuses each request moves from, and to what.
_MOVES = {
    PAUSING: ((RUNNING, RESUMING), PAUSING),
    RESUMING: ((PAUSING, PAUSED), RESUMING),
}
MAX_DEPTH = 32


def _refused(execution: Execution, wanted: str) -> Conflict:
    verb = "paused" if wanted == PAUSING else "resumed"
    return Conflict(f"execution {execution.id!r} is {execution.status}: it cannot be {verb}")


# --- SQLite (plain functions run on the store's threads, in its transactions) ---


def _sqlite_is_workflow(conn: sqlite3.Connection, execution_id: str) -> bool:
    found = conn.execute(
        "SELECT 1 FROM workflow_runs WHERE execution_id = ?", (execution_id,)
    ).fetchone()
    return found is not None


def sqlite_request(
    conn: sqlite3.Connection, execution_id: str, wanted: str, now: datetime, depth: int = 0
) -> tuple[Execution, str]:
    """Move a workflow to `wanted` (pausing or resuming) and its subworkflows with it;
    returns the workflow after the request and its status before it."""
    execution = executions.sqlite_get(conn, execution_id)
    previous = execution.status
    sources, target = _MOVES[wanted]
    if not _sqlite_is_workflow(conn, execution_id):
        if depth:
            return execution, previous
        raise NotFound(f"execution {execution_id!r} is not a running workflow")
    if previous not in sources:
        if depth:
            return execution, previous
        raise _refused(execution, wanted)
    row = conn.execute(
        f"UPDATE executions SET status = ?, updated_at = ?, {columns.SQLITE_APPEND_LOG}"
        f" WHERE id = ? RETURNING {columns.SQLITE_EXECUTION_COLUMNS}",
        (target, time_to_text(now), columns.sqlite_log_param(target, now), execution_id),
    ).fetchone()
    conn.execute("UPDATE workflow_runs SET due = 1 WHERE execution_id = ?", (execution_id,))
    if depth < MAX_DEPTH:
        for (child,) in conn.execute(
            "SELECT id FROM executions WHERE parent_id = ? AND status IN (?, ?, ?, ?)",
            (execution_id, RUNNING, PAUSING, PAUSED, RESUMING),
        ).fetchall():
            sqlite_request(conn, child, wanted, now, depth + 1)
    moved = columns.sqlite_execution(row)
    if wanted == RESUMING and depth == 0:
        _sqlite_resume_ancestors(conn, moved.parent, now)
    return moved, previous


def _sqlite_resume_ancestors(conn: sqlite3.Connection, parent: str | None, now: datetime) -> None:
    """A subworkflow resumed on its own resumes the paused workflows above it (as
    StackStorm cascades a resume upwards); their other paused children stay paused."""
    for _ in range(MAX_DEPTH):
        if parent is None:
            return
        row = conn.execute(
            f"UPDATE executions SET status = ?, updated_at = ?, {columns.SQLITE_APPEND_LOG}"
            " WHERE id = ? AND status = ? RETURNING parent_id",
            (RESUMING, time_to_text(now), columns.sqlite_log_param(RESUMING, now), parent, PAUSED),
        ).fetchone()
        if row is None:
            return
        conn.execute("UPDATE workflow_runs SET due = 1 WHERE execution_id = ?", (parent,))
        parent = row["parent_id"]


def sqlite_pause(conn: sqlite3.Connection, execution_id: str, now: datetime):
    return sqlite_request(conn, execution_id, PAUSING, now)


def sqlite_resume(conn: sqlite3.Connection, execution_id: str, now: datetime):
    return sqlite_request(conn, execution_id, RESUMING, now)


# --- PostgreSQL (coroutines on a pool connection, in a transaction) ---


async def pg_request(
    conn: asyncpg.Connection, execution_id: str, wanted: str, now: datetime, depth: int = 0
) -> tuple[Execution, str]:
    # The run's row first, in the order a step takes them (see workflows.pg_cancel_tree).
    is_workflow = await conn.fetchval(
        "SELECT 1 FROM workflow_runs WHERE execution_id = $1 FOR UPDATE", execution_id
    )
    row = await conn.fetchrow(
        f"SELECT {columns.PG_EXECUTION_COLUMNS} FROM executions WHERE id = $1 FOR UPDATE",
        execution_id,
    )
    if row is None:
        raise NotFound(f"execution {execution_id!r} not found")
    execution = columns.pg_execution(row)
    previous = execution.status
    sources, target = _MOVES[wanted]
    if not is_workflow:
        if depth:
            return execution, previous
        raise NotFound(f"execution {execution_id!r} is not a running workflow")
    if previous not in sources:
        if depth:
            return execution, previous
        raise _refused(execution, wanted)
    row = await conn.fetchrow(
        "UPDATE executions SET status = $2, updated_at = now(), log = log || $3::jsonb"
        f" WHERE id = $1 RETURNING {columns.PG_EXECUTION_COLUMNS}",
        execution_id,
        target,
        columns.pg_log_param(target, now),
    )
    await conn.execute("UPDATE workflow_runs SET due = true WHERE execution_id = $1", execution_id)
    await columns.pg_notify(conn, "workflows")
    if depth < MAX_DEPTH:
        children = await conn.fetch(
            "SELECT id FROM executions WHERE parent_id = $1 AND status = ANY($2::text[])"
            " ORDER BY id",
            execution_id,
            [RUNNING, PAUSING, PAUSED, RESUMING],
        )
        for child in children:
            await pg_request(conn, child["id"], wanted, now, depth + 1)
    moved = columns.pg_execution(row)
    if wanted == RESUMING and depth == 0:
        await _pg_resume_ancestors(conn, moved.parent, now)
    return moved, previous


async def _pg_resume_ancestors(conn: asyncpg.Connection, parent: str | None, now: datetime) -> None:
    for _ in range(MAX_DEPTH):
        if parent is None:
            return
        await conn.execute("SELECT 1 FROM workflow_runs WHERE execution_id = $1 FOR UPDATE", parent)
        parent_of = await conn.fetchrow(
            "UPDATE executions SET status = $2, updated_at = now(), log = log || $3::jsonb"
            " WHERE id = $1 AND status = $4 RETURNING parent_id",
            parent,
            RESUMING,
            columns.pg_log_param(RESUMING, now),
            PAUSED,
        )
        if parent_of is None:
            return
        await conn.execute("UPDATE workflow_runs SET due = true WHERE execution_id = $1", parent)
        await columns.pg_notify(conn, "workflows")
        parent = parent_of["parent_id"]


async def pg_pause(conn: asyncpg.Connection, execution_id: str, now: datetime):
    return await pg_request(conn, execution_id, PAUSING, now)


async def pg_resume(conn: asyncpg.Connection, execution_id: str, now: datetime):
    return await pg_request(conn, execution_id, RESUMING, now)
