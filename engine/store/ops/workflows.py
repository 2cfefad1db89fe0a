"""Workflow runs, both dialects: started, claimed for a step with a lease, stepped, and
canceled down the tree of their children.

A workflow execution runs no process: once started it stays `running` with no lease, so
the actions worker's claims never take it again; its progress is its `workflow_runs` row.
A step is one transaction: the conductor's new state (only if the version read is still
current), the finished children marked applied (a result is never applied twice), the
new children requested, and — when the workflow ends — its final status and result, and
its own parent's run made due (a subworkflow ending is a child ending).

`due` says a step has work: a child ended (engine.store.ops.lineage sets it in the
child's transaction) or a cancel arrived. A step recomputes it from the children, so a
child ending while the step was being decided keeps the run due.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from engine.model.records import (
    CANCELED,
    CANCELING,
    RUNNING,
    TERMINAL_EXECUTION_STATUSES,
    Execution,
    NewExecution,
    WorkflowStep,
)
from engine.outbound import events as outbound_events
from engine.store.codec import loads, time_to_text
from engine.store.ops import columns, executions, generic_triggers, inquiries, lineage, outbox
from engine.store.ops.generic_triggers import GenericSource

PAUSED = "paused"

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg

_ENDED = "(" + ", ".join(f"'{status}'" for status in sorted(TERMINAL_EXECUTION_STATUSES)) + ")"
# A workflow not ended yet, and one whose pause or resume a step settles (a running one
# is paused when all it runs are paused subworkflows: engine.workers.workflow_settling).
_LIVE = "('running', 'canceling', 'pausing', 'paused', 'resuming')"
# A step settles a pause or a resume from these (a running workflow pauses when every
# active task waits for a person or is a paused subworkflow, and a paused one runs again
# once one of them is done).
_SETTLING = "('running', 'pausing', 'paused', 'resuming')"
# Children waiting: an inquiry pending a response, a paused subworkflow.
_WAITING = "('pending', 'paused')"
# A cancel walks the tree of subworkflows this deep at most (a workflow cannot call
# itself without end: each level is a real execution, and this bounds one transaction).
MAX_CANCEL_DEPTH = 32


def _due(run: str, false: str) -> str:
    """What a step recomputes `due` from: a child ended and not applied yet, a resume to
    settle once no subworkflow is pausing or resuming any more, a canceling or pausing
    workflow with no child left running (its step ends or pauses it), or a running or
    pausing one whose every live child waits — an inquiry pending, a paused subworkflow
    (its step pauses it). A subworkflow settling its pause or resume makes its parent due
    (`_sqlite_end`, `_pg_end`)."""
    return (
        f"EXISTS (SELECT 1 FROM executions c WHERE c.parent_id = {run}"
        f" AND c.step_applied = {false} AND c.status IN {_ENDED})"
        f" OR (EXISTS (SELECT 1 FROM executions w WHERE w.id = {run} AND w.status = 'resuming')"
        f" AND NOT EXISTS (SELECT 1 FROM executions c WHERE c.parent_id = {run}"
        "  AND c.status IN ('pausing', 'resuming')))"
        f" OR (EXISTS (SELECT 1 FROM executions w WHERE w.id = {run}"
        "  AND w.status IN ('canceling', 'pausing'))"
        f" AND NOT EXISTS (SELECT 1 FROM executions c WHERE c.parent_id = {run}"
        f" AND c.status NOT IN {_ENDED}))"
        f" OR (EXISTS (SELECT 1 FROM executions w WHERE w.id = {run}"
        "  AND w.status IN ('running', 'pausing'))"
        f" AND EXISTS (SELECT 1 FROM executions c WHERE c.parent_id = {run}"
        f" AND c.status IN {_WAITING})"
        f" AND NOT EXISTS (SELECT 1 FROM executions c WHERE c.parent_id = {run}"
        f" AND c.status NOT IN {_ENDED} AND c.status NOT IN {_WAITING}))"
    )


# --- SQLite (plain functions run on the store's threads, in its transactions) ---


def _sqlite_end(
    conn: sqlite3.Connection,
    execution_id: str,
    status: str,
    result_json: str,
    now: datetime,
    generic: GenericSource | None,
) -> Execution | None:
    """The workflow's final status and result — or a pause or resume settled."""
    at = time_to_text(now)
    if status not in TERMINAL_EXECUTION_STATUSES:
        before = conn.execute(
            "SELECT status FROM executions WHERE id = ?", (execution_id,)
        ).fetchone()
        row = conn.execute(
            f"UPDATE executions SET status = ?, updated_at = ?, {columns.SQLITE_APPEND_LOG}"
            f" WHERE id = ? AND status IN {_SETTLING} AND status <> ?"
            f" RETURNING {columns.SQLITE_EXECUTION_COLUMNS}",
            (status, at, columns.sqlite_log_param(status, now), execution_id, status),
        ).fetchone()
        if row is None:
            return None
        settled = columns.sqlite_execution(row)
        lineage.sqlite_mark_parents_due(conn, [settled])  # it may settle its parent's too
        if status != PAUSED and before is not None and before["status"] == PAUSED:
            inquiries.sqlite_resume_ancestors(conn, settled.parent, now)
        return settled
    row = conn.execute(
        "UPDATE executions SET status = ?, result = ?, finished_at = ?, updated_at = ?,"
        f" {columns.SQLITE_APPEND_LOG} WHERE id = ? AND status IN {_LIVE}"
        f" RETURNING {columns.SQLITE_EXECUTION_COLUMNS}",
        (status, result_json, at, at, columns.sqlite_log_param(status, now), execution_id),
    ).fetchone()
    if row is None:
        return None
    ended = columns.sqlite_execution(row)
    lineage.sqlite_mark_parents_due(conn, [ended])
    generic_triggers.sqlite_fire(conn, ended, generic, now)
    return ended


def _sqlite_children(conn: sqlite3.Connection, children: Sequence[NewExecution], now) -> None:
    for child in children:
        executions.sqlite_insert(conn, child, now)


def sqlite_start(
    conn: sqlite3.Connection,
    execution_id: str,
    lease_token: str,
    state_json: str,
    children: Sequence[NewExecution],
    final_status: str | None,
    result_json: str | None,
    now: datetime,
    generic: GenericSource | None = None,
) -> Execution:
    at = time_to_text(now)
    row = conn.execute(
        "UPDATE executions SET status = ?, started_at = ?, updated_at = ?, lease_token = NULL,"
        f" lease_expires_at = NULL, {columns.SQLITE_APPEND_LOG}"
        " WHERE id = ? AND lease_token = ? AND status = 'scheduled'"
        f" RETURNING {columns.SQLITE_EXECUTION_COLUMNS}",
        (RUNNING, at, at, columns.sqlite_log_param(RUNNING, now), execution_id, lease_token),
    ).fetchone()
    if row is None:
        raise columns.sqlite_missing_or_lost(conn, "executions", "execution", execution_id)
    workflow = columns.sqlite_execution(row)
    conn.execute(
        "INSERT INTO workflow_runs (execution_id, state, version, due, updated_at)"
        " VALUES (?, ?, 1, 0, ?)",
        (execution_id, state_json, at),
    )
    _sqlite_children(conn, children, now)
    if final_status is not None:
        workflow = _sqlite_end(
            conn, execution_id, final_status, result_json or "null", now, generic
        )
        assert workflow is not None  # it is running: this transaction started it
    outbox.sqlite_emit(conn, now, lambda: [outbound_events.execution_updated(workflow)])
    return workflow


def sqlite_claim(
    conn: sqlite3.Connection, limit: int, lease_seconds: float, now: datetime
) -> list[WorkflowStep]:
    at = time_to_text(now)
    runs = conn.execute(
        "UPDATE workflow_runs SET lease_token = lower(hex(randomblob(16))),"
        " lease_expires_at = ?, updated_at = ?"
        " WHERE execution_id IN (SELECT execution_id FROM workflow_runs"
        "  WHERE (due = 1 OR lease_token IS NOT NULL)"
        "  AND ((due = 1 AND lease_token IS NULL) OR lease_expires_at < ?)"
        "  ORDER BY execution_id LIMIT ?)"
        " RETURNING execution_id, state, version, lease_token",
        (time_to_text(now + timedelta(seconds=lease_seconds)), at, at, limit),
    ).fetchall()
    cols = columns.SQLITE_EXECUTION_COLUMNS
    steps = []
    for run in runs:
        run_id = run["execution_id"]
        workflow = executions.sqlite_get(conn, run_id)
        finished = conn.execute(
            f"SELECT {cols} FROM executions WHERE parent_id = ? AND step_applied = 0"
            f" AND status IN {_ENDED} ORDER BY finished_at, id",
            (run_id,),
        ).fetchall()
        active, paused, settling, asking = conn.execute(
            "SELECT count(*), coalesce(sum(status = 'paused'), 0),"
            " coalesce(sum(status IN ('pausing', 'resuming')), 0),"
            " coalesce(sum(status = 'pending'), 0)"
            f" FROM executions WHERE parent_id = ? AND status NOT IN {_ENDED}",
            (run_id,),
        ).fetchone()
        finished_children = map(columns.sqlite_execution, finished)
        steps.append(_step(workflow, run, finished_children, active, paused, settling, asking))
    return sorted(steps, key=lambda step: step.workflow.id)


def sqlite_apply(
    conn: sqlite3.Connection,
    execution_id: str,
    lease_token: str,
    version: int,
    state_json: str,
    applied: Sequence[str],
    children: Sequence[NewExecution],
    final_status: str | None,
    result_json: str | None,
    now: datetime,
    generic: GenericSource | None = None,
) -> Execution:
    held = conn.execute(
        "UPDATE workflow_runs SET state = ?, version = version + 1, lease_token = NULL,"
        " lease_expires_at = NULL, updated_at = ?"
        " WHERE execution_id = ? AND lease_token = ? AND version = ? RETURNING version",
        (state_json, time_to_text(now), execution_id, lease_token, version),
    ).fetchone()
    if held is None:
        raise columns.sqlite_missing_or_lost(conn, "executions", "workflow run", execution_id)
    conn.execute(
        "UPDATE executions SET step_applied = 1"
        " WHERE parent_id = ? AND id IN (SELECT value FROM json_each(?))",
        (execution_id, executions.dumps(list(applied))),
    )
    _sqlite_children(conn, children, now)
    workflow = None
    if final_status is not None:
        workflow = _sqlite_end(
            conn, execution_id, final_status, result_json or "null", now, generic
        )
    conn.execute(
        f"UPDATE workflow_runs SET due = ({_due(':run', '0')}) WHERE execution_id = :run",
        {"run": execution_id},
    )
    if workflow is None:
        return executions.sqlite_get(conn, execution_id)
    ended = workflow
    outbox.sqlite_emit(conn, now, lambda: [outbound_events.execution_updated(ended)])
    return workflow


def sqlite_get_state(conn: sqlite3.Connection, execution_id: str) -> Any:
    row = conn.execute(
        "SELECT state FROM workflow_runs WHERE execution_id = ?", (execution_id,)
    ).fetchone()
    return None if row is None else loads(row["state"])


def sqlite_cancel_tree(
    conn: sqlite3.Connection,
    execution_id: str,
    now: datetime,
    generic: GenericSource | None = None,
    depth: int = 0,
) -> tuple[Execution, str]:
    """Cancel an execution and, for a workflow, every child not ended (subworkflows too);
    returns the execution after the request and its status before it."""
    before = conn.execute("SELECT status FROM executions WHERE id = ?", (execution_id,)).fetchone()
    if before is not None and before["status"] in ("pausing", "paused", "resuming"):
        row = conn.execute(
            "UPDATE executions SET status = 'canceling', updated_at = ?,"
            f" {columns.SQLITE_APPEND_LOG} WHERE id = ?"
            f" RETURNING {columns.SQLITE_EXECUTION_COLUMNS}",
            (time_to_text(now), columns.sqlite_log_param(CANCELING, now), execution_id),
        ).fetchone()
        execution, previous = columns.sqlite_execution(row), before["status"]
    else:
        execution, previous = executions.sqlite_request_cancel(conn, execution_id, now, generic)
    if previous in TERMINAL_EXECUTION_STATUSES or execution.status not in (CANCELING, CANCELED):
        return execution, previous
    if depth < MAX_CANCEL_DEPTH:
        for (child,) in conn.execute(
            f"SELECT id FROM executions WHERE parent_id = ? AND status NOT IN {_ENDED}"
            " AND status <> 'canceling'",
            (execution_id,),
        ).fetchall():
            sqlite_cancel_tree(conn, child, now, generic, depth + 1)
    # A canceling workflow ends in its next step once no child is left running.
    conn.execute("UPDATE workflow_runs SET due = 1 WHERE execution_id = ?", (execution_id,))
    return execution, previous


# --- PostgreSQL (coroutines on a pool connection, in a transaction) ---


async def _pg_end(
    conn: asyncpg.Connection,
    execution_id: str,
    status: str,
    result_json: str,
    now: datetime,
    generic: GenericSource | None,
) -> Execution | None:
    if status not in TERMINAL_EXECUTION_STATUSES:
        before = await conn.fetchval("SELECT status FROM executions WHERE id = $1", execution_id)
        row = await conn.fetchrow(
            "UPDATE executions SET status = $2, updated_at = now(), log = log || $3::jsonb"
            f" WHERE id = $1 AND status IN {_SETTLING} AND status <> $2"
            f" RETURNING {columns.PG_EXECUTION_COLUMNS}",
            execution_id,
            status,
            columns.pg_log_param(status, now),
        )
        if row is None:
            return None
        settled = columns.pg_execution(row)
        await lineage.pg_mark_parents_due(conn, [settled])  # it may settle its parent's too
        if status != PAUSED and before == PAUSED:
            await inquiries.pg_resume_ancestors(conn, settled.parent, now)
        return settled
    row = await conn.fetchrow(
        "UPDATE executions SET status = $2, result = $3::jsonb, finished_at = $4,"
        " updated_at = now(), log = log || $5::jsonb"
        f" WHERE id = $1 AND status IN {_LIVE}"
        f" RETURNING {columns.PG_EXECUTION_COLUMNS}",
        execution_id,
        status,
        result_json,
        now,
        columns.pg_log_param(status, now),
    )
    if row is None:
        return None
    ended = columns.pg_execution(row)
    await lineage.pg_mark_parents_due(conn, [ended])
    await generic_triggers.pg_fire(conn, ended, generic)
    return ended


async def _pg_children(
    conn: asyncpg.Connection, children: Sequence[NewExecution], now: datetime
) -> None:
    for child in children:
        await executions.pg_insert(conn, child, now)
    if children:
        await columns.pg_notify(conn, "executions")


async def pg_start(
    conn: asyncpg.Connection,
    execution_id: str,
    lease_token: str,
    state_json: str,
    children: Sequence[NewExecution],
    final_status: str | None,
    result_json: str | None,
    now: datetime,
    generic: GenericSource | None = None,
) -> Execution:
    row = await conn.fetchrow(
        "UPDATE executions SET status = $3, started_at = $4, updated_at = now(),"
        " lease_token = NULL, lease_expires_at = NULL, log = log || $5::jsonb"
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
    workflow = columns.pg_execution(row)
    await conn.execute(
        "INSERT INTO workflow_runs (execution_id, state, version, due, updated_at)"
        " VALUES ($1, $2::json, 1, false, now())",
        execution_id,
        state_json,
    )
    await _pg_children(conn, children, now)
    if final_status is not None:
        ended = await _pg_end(conn, execution_id, final_status, result_json or "null", now, generic)
        assert ended is not None  # it is running: this transaction started it
        workflow = ended
    await outbox.pg_emit(conn, now, lambda: [outbound_events.execution_updated(workflow)])
    return workflow


async def pg_claim(
    conn: asyncpg.Connection, limit: int, lease_seconds: float, now: datetime
) -> list[WorkflowStep]:
    # `now` is unused: leases follow the database's clock, shared by every process.
    runs = await conn.fetch(
        f"UPDATE workflow_runs SET lease_token = {columns.PG_NEW_TOKEN},"
        " lease_expires_at = now() + make_interval(secs => $1), updated_at = now()"
        " WHERE execution_id IN (SELECT execution_id FROM workflow_runs"
        "  WHERE (due OR lease_token IS NOT NULL)"
        "  AND ((due AND lease_token IS NULL) OR lease_expires_at < now())"
        "  ORDER BY execution_id LIMIT $2 FOR UPDATE SKIP LOCKED)"
        " RETURNING execution_id, state::text AS state, version, lease_token",
        float(lease_seconds),
        limit,
    )
    cols = columns.PG_EXECUTION_COLUMNS
    steps = []
    for run in runs:
        run_id = run["execution_id"]
        workflow = await executions.pg_get(conn, run_id)
        finished = await conn.fetch(
            f"SELECT {cols} FROM executions WHERE parent_id = $1 AND NOT step_applied"
            f" AND status IN {_ENDED} ORDER BY finished_at, id",
            run_id,
        )
        counts = await conn.fetchrow(
            "SELECT count(*) AS active, count(*) FILTER (WHERE status = 'paused') AS paused,"
            " count(*) FILTER (WHERE status IN ('pausing', 'resuming')) AS settling,"
            " count(*) FILTER (WHERE status = 'pending') AS asking"
            f" FROM executions WHERE parent_id = $1 AND status NOT IN {_ENDED}",
            run_id,
        )
        finished_children = map(columns.pg_execution, finished)
        steps.append(
            _step(
                workflow,
                run,
                finished_children,
                counts["active"],
                counts["paused"],
                counts["settling"],
                counts["asking"],
            )
        )
    return sorted(steps, key=lambda step: step.workflow.id)


async def pg_apply(
    conn: asyncpg.Connection,
    execution_id: str,
    lease_token: str,
    version: int,
    state_json: str,
    applied: Sequence[str],
    children: Sequence[NewExecution],
    final_status: str | None,
    result_json: str | None,
    now: datetime,
    generic: GenericSource | None = None,
) -> Execution:
    held = await conn.fetchval(
        "UPDATE workflow_runs SET state = $4::json, version = version + 1, lease_token = NULL,"
        " lease_expires_at = NULL, updated_at = now()"
        " WHERE execution_id = $1 AND lease_token = $2 AND version = $3 RETURNING version",
        execution_id,
        lease_token,
        version,
        state_json,
    )
    if held is None:
        raise await columns.pg_missing_or_lost(conn, "executions", "workflow run", execution_id)
    await conn.execute(
        "UPDATE executions SET step_applied = true WHERE parent_id = $1 AND id = ANY($2::text[])",
        execution_id,
        list(applied),
    )
    await _pg_children(conn, children, now)
    workflow = None
    if final_status is not None:
        workflow = await _pg_end(
            conn, execution_id, final_status, result_json or "null", now, generic
        )
    await conn.execute(
        f"UPDATE workflow_runs SET due = ({_due('$1', 'false')}) WHERE execution_id = $1",
        execution_id,
    )
    if workflow is None:
        return await executions.pg_get(conn, execution_id)
    ended = workflow
    await outbox.pg_emit(conn, now, lambda: [outbound_events.execution_updated(ended)])
    return workflow


async def pg_get_state(conn: asyncpg.Connection, execution_id: str) -> Any:
    state = await conn.fetchval(
        "SELECT state::text FROM workflow_runs WHERE execution_id = $1", execution_id
    )
    return None if state is None else loads(state)


async def pg_cancel_tree(
    conn: asyncpg.Connection,
    execution_id: str,
    now: datetime,
    generic: GenericSource | None = None,
    depth: int = 0,
) -> tuple[Execution, str]:
    # The run's row first, as a step takes it (then the execution's): the same order, so
    # a cancel and a step of one workflow wait for each other instead of deadlocking.
    await conn.execute(
        "SELECT 1 FROM workflow_runs WHERE execution_id = $1 FOR UPDATE", execution_id
    )
    previous = await conn.fetchval(
        "SELECT status FROM executions WHERE id = $1 FOR UPDATE", execution_id
    )
    if previous in ("pausing", "paused", "resuming"):
        row = await conn.fetchrow(
            "UPDATE executions SET status = 'canceling', updated_at = now(),"
            f" log = log || $2::jsonb WHERE id = $1 RETURNING {columns.PG_EXECUTION_COLUMNS}",
            execution_id,
            columns.pg_log_param(CANCELING, now),
        )
        execution = columns.pg_execution(row)
    else:
        execution, previous = await executions.pg_request_cancel(conn, execution_id, now, generic)
    if previous in TERMINAL_EXECUTION_STATUSES or execution.status not in (CANCELING, CANCELED):
        return execution, previous
    if depth < MAX_CANCEL_DEPTH:
        children = await conn.fetch(
            f"SELECT id FROM executions WHERE parent_id = $1 AND status NOT IN {_ENDED}"
            " AND status <> 'canceling' ORDER BY id",
            execution_id,
        )
        for child in children:
            await pg_cancel_tree(conn, child["id"], now, generic, depth + 1)
    await conn.execute("UPDATE workflow_runs SET due = true WHERE execution_id = $1", execution_id)
    await columns.pg_notify(conn, "workflows")
    return execution, previous


def _step(
    workflow: Execution,
    run: Any,
    finished: Any,
    active: int,
    paused: int,
    settling: int,
    asking: int,
) -> WorkflowStep:
    return WorkflowStep(
        workflow=workflow,
        state=loads(run["state"]),
        version=run["version"],
        lease_token=run["lease_token"],
        finished=tuple(finished),
        active=active,
        paused=paused,
        settling=settling,
        asking=asking,
    )
