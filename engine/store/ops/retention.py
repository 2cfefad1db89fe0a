"""Retention: finished records older than a cutoff deleted in small batches, both dialects.

One call deletes at most `limit` records of one kind in one short transaction, so the
writer (and, on SQLite, the ingest that shares it) waits for at most one batch; the
retention role (engine.workers.retention) calls again until a batch comes back short.
What is still to be done is never deleted: a pending or processing trigger instance, an
execution that has not ended (or whose workflow has a task that has not), a delivery
still to be attempted.

- trigger instances go with what explains them: their enforcements and evaluation traces.
  An instance holding a dedupe key is kept at least until `dedupe_before`, so a sender's
  retry inside the dedupe window is still recognised however short the retention.
- executions are purged by root: a workflow (or chain) with every task execution below
  it, its run state, answered inquiries and stored output; never a part of a tree, and
  never one whose policy retry (engine.store.ops.policy_retries) is still to be created.
  Enforcements that pointed at a purged execution keep their own row with no execution.
- deliveries go with their event once no other delivery of it is left.
- once_per keys (a rule fired for this object) are purged only when their own retention
  is configured: without them such a rule would fire again for an old object.

`dry_run` counts what a purge with no batch limit would delete, and deletes nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engine.errors import StoreError
from engine.model.records import (
    PROCESSED,
    PROCESSING_FAILED,
    TERMINAL_EXECUTION_STATUSES,
)
from engine.outbound.delivery import FAILED as DELIVERY_FAILED
from engine.outbound.delivery import SUCCEEDED as DELIVERY_SUCCEEDED
from engine.store.codec import time_to_text

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg

TRIGGER_INSTANCES = "trigger_instances"
EXECUTIONS = "executions"
DELIVERIES = "deliveries"
ONCE_PER_KEYS = "once_per_keys"
PURGE_KINDS = (TRIGGER_INSTANCES, EXECUTIONS, DELIVERIES, ONCE_PER_KEYS)

_DONE_INSTANCES = (PROCESSED, PROCESSING_FAILED)
_ENDED_EXECUTIONS = tuple(sorted(TERMINAL_EXECUTION_STATUSES))
_ENDED_DELIVERIES = (DELIVERY_SUCCEEDED, DELIVERY_FAILED)


def check_kind(kind: str) -> None:
    if kind not in PURGE_KINDS:
        raise StoreError(f"unknown kind {kind!r} to purge; known: {', '.join(PURGE_KINDS)}")


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


# --- SQLite ------------------------------------------------------------------------------


def sqlite_purge(
    conn: sqlite3.Connection,
    kind: str,
    before: datetime,
    dedupe_before: datetime,
    limit: int | None,
    dry_run: bool,
) -> int:
    check_kind(kind)
    cutoff, dedupe_cutoff = time_to_text(before), time_to_text(dedupe_before)
    cap = -1 if limit is None or dry_run else limit  # LIMIT -1: no limit in SQLite
    if kind == TRIGGER_INSTANCES:
        ids = _sqlite_ids(
            conn,
            "SELECT id FROM trigger_instances WHERE occurrence_time < ?"
            f" AND status IN ({_marks(_DONE_INSTANCES)})"
            " AND (dedupe_key IS NULL OR occurrence_time < ?)"
            " ORDER BY occurrence_time LIMIT ?",
            (cutoff, *_DONE_INSTANCES, dedupe_cutoff, cap),
        )
        if not dry_run:
            _sqlite_delete_instances(conn, ids)
        return len(ids)
    if kind == EXECUTIONS:
        ids = _sqlite_execution_trees(conn, cutoff, cap)
        if not dry_run:
            _sqlite_delete_executions(conn, ids)
        return len(ids)
    if kind == DELIVERIES:
        rows = conn.execute(
            "SELECT id, event_id FROM deliveries WHERE created_at < ?"
            f" AND status IN ({_marks(_ENDED_DELIVERIES)}) ORDER BY created_at LIMIT ?",
            (cutoff, *_ENDED_DELIVERIES, cap),
        ).fetchall()
        if not dry_run:
            _sqlite_delete_deliveries(conn, [r[0] for r in rows], {r[1] for r in rows})
        return len(rows)
    ids = _sqlite_ids(
        conn,
        "SELECT rule_ref || char(0) || key FROM once_per_keys WHERE created_at < ? LIMIT ?",
        (cutoff, cap),
    )
    if not dry_run:
        for chunk in _chunks(ids):
            conn.execute(
                f"DELETE FROM once_per_keys WHERE rule_ref || char(0) || key IN ({_marks(chunk)})",
                chunk,
            )
    return len(ids)


def _sqlite_ids(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[str]:
    return [row[0] for row in conn.execute(sql, args)]


def _chunks(ids: Sequence[str], size: int = 500) -> list[Sequence[str]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def _sqlite_delete_instances(conn: sqlite3.Connection, ids: Sequence[str]) -> None:
    for chunk in _chunks(ids):
        marks = _marks(chunk)
        conn.execute(f"DELETE FROM rule_evaluations WHERE trigger_instance_id IN ({marks})", chunk)
        conn.execute(f"DELETE FROM enforcements WHERE trigger_instance_id IN ({marks})", chunk)
        conn.execute(f"DELETE FROM trigger_instances WHERE id IN ({marks})", chunk)


def _sqlite_execution_trees(conn: sqlite3.Connection, cutoff: str, cap: int) -> list[str]:
    """Every execution of the oldest ended roots whose whole tree has ended."""
    ended = _marks(_ENDED_EXECUTIONS)
    rows = conn.execute(
        f"""
        WITH RECURSIVE roots(id) AS (
            SELECT id FROM executions
            WHERE created_at < ? AND parent_id IS NULL AND status IN ({ended})
              AND id NOT IN (SELECT original_id FROM execution_retries)
            ORDER BY created_at LIMIT ?
        ),
        tree(root, id) AS (
            SELECT id, id FROM roots
            UNION ALL
            SELECT tree.root, e.id FROM executions e JOIN tree ON e.parent_id = tree.id
        )
        SELECT tree.root, tree.id, e.status FROM tree JOIN executions e ON e.id = tree.id
        """,
        (cutoff, *_ENDED_EXECUTIONS, cap),
    ).fetchall()
    return _whole_ended_trees(rows)


def _whole_ended_trees(rows: Sequence[Any]) -> list[str]:
    """(root, id, status) rows → the ids of the trees in which every status has ended."""
    trees: dict[str, list[str]] = {}
    unfinished: set[str] = set()
    for root, execution_id, status in rows:
        trees.setdefault(root, []).append(execution_id)
        if status not in TERMINAL_EXECUTION_STATUSES:
            unfinished.add(root)
    return [i for root, ids in trees.items() if root not in unfinished for i in ids]


def _sqlite_delete_executions(conn: sqlite3.Connection, ids: Sequence[str]) -> None:
    for chunk in _chunks(ids):
        marks = _marks(chunk)
        conn.execute(
            f"UPDATE enforcements SET execution_id = NULL WHERE execution_id IN ({marks})", chunk
        )
        conn.execute(f"DELETE FROM workflow_runs WHERE execution_id IN ({marks})", chunk)
        conn.execute(f"DELETE FROM inquiries WHERE execution_id IN ({marks})", chunk)
        conn.execute(f"DELETE FROM execution_output WHERE execution_id IN ({marks})", chunk)
        conn.execute(f"DELETE FROM executions WHERE id IN ({marks})", chunk)


def _sqlite_delete_deliveries(
    conn: sqlite3.Connection, ids: Sequence[str], event_ids: set[str]
) -> None:
    for chunk in _chunks(ids):
        conn.execute(f"DELETE FROM deliveries WHERE id IN ({_marks(chunk)})", chunk)
    for chunk in _chunks(sorted(event_ids)):
        conn.execute(
            f"DELETE FROM events WHERE id IN ({_marks(chunk)})"
            " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)",
            chunk,
        )


# --- PostgreSQL --------------------------------------------------------------------------


async def pg_purge(
    conn: asyncpg.Connection,
    kind: str,
    before: datetime,
    dedupe_before: datetime,
    limit: int | None,
    dry_run: bool,
) -> int:
    check_kind(kind)
    cap = None if dry_run else limit  # LIMIT NULL: no limit in PostgreSQL
    # SKIP LOCKED: two processes purging at once take different rows instead of waiting.
    lock = "" if dry_run else " FOR UPDATE SKIP LOCKED"
    if kind == TRIGGER_INSTANCES:
        ids = await _pg_ids(
            conn,
            "SELECT id FROM trigger_instances WHERE occurrence_time < $1"
            " AND status = ANY($2::text[]) AND (dedupe_key IS NULL OR occurrence_time < $3)"
            f" ORDER BY occurrence_time LIMIT $4{lock}",
            before,
            list(_DONE_INSTANCES),
            dedupe_before,
            cap,
        )
        if not dry_run and ids:
            await conn.execute(
                "DELETE FROM rule_evaluations WHERE trigger_instance_id = ANY($1::text[])", ids
            )
            await conn.execute(
                "DELETE FROM enforcements WHERE trigger_instance_id = ANY($1::text[])", ids
            )
            await conn.execute("DELETE FROM trigger_instances WHERE id = ANY($1::text[])", ids)
        return len(ids)
    if kind == EXECUTIONS:
        ids = await _pg_execution_trees(conn, before, cap, lock)
        if not dry_run and ids:
            await conn.execute(
                "UPDATE enforcements SET execution_id = NULL WHERE execution_id = ANY($1::text[])",
                ids,
            )
            await conn.execute(
                "DELETE FROM workflow_runs WHERE execution_id = ANY($1::text[])", ids
            )
            await conn.execute("DELETE FROM executions WHERE id = ANY($1::text[])", ids)
        return len(ids)
    if kind == DELIVERIES:
        rows = await conn.fetch(
            "SELECT id, event_id FROM deliveries WHERE created_at < $1"
            f" AND status = ANY($2::text[]) ORDER BY created_at LIMIT $3{lock}",
            before,
            list(_ENDED_DELIVERIES),
            cap,
        )
        if not dry_run and rows:
            await conn.execute(
                "DELETE FROM deliveries WHERE id = ANY($1::text[])", [r["id"] for r in rows]
            )
            await conn.execute(
                "DELETE FROM events WHERE id = ANY($1::text[])"
                " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)",
                sorted({r["event_id"] for r in rows}),
            )
        return len(rows)
    rows = await conn.fetch(
        f"SELECT rule_ref, key FROM once_per_keys WHERE created_at < $1 LIMIT $2{lock}",
        before,
        cap,
    )
    if not dry_run and rows:
        await conn.execute(
            "DELETE FROM once_per_keys WHERE (rule_ref, key) IN"
            " (SELECT * FROM unnest($1::text[], $2::text[]))",
            [r["rule_ref"] for r in rows],
            [r["key"] for r in rows],
        )
    return len(rows)


async def _pg_ids(conn: asyncpg.Connection, sql: str, *args: Any) -> list[str]:
    return [row[0] for row in await conn.fetch(sql, *args)]


async def _pg_execution_trees(
    conn: asyncpg.Connection, before: datetime, cap: int | None, lock: str
) -> list[str]:
    roots = await _pg_ids(
        conn,
        "SELECT id FROM executions WHERE created_at < $1 AND parent_id IS NULL"
        " AND status = ANY($2::text[])"
        " AND id NOT IN (SELECT original_id FROM execution_retries)"
        f" ORDER BY created_at LIMIT $3{lock}",
        before,
        list(_ENDED_EXECUTIONS),
        cap,
    )
    if not roots:
        return []
    rows = await conn.fetch(
        """
        WITH RECURSIVE tree(root, id) AS (
            SELECT id, id FROM unnest($1::text[]) AS r(id)
            UNION ALL
            SELECT tree.root, e.id FROM executions e JOIN tree ON e.parent_id = tree.id
        )
        SELECT tree.root, tree.id, e.status FROM tree JOIN executions e ON e.id = tree.id
        """,
        roots,
    )
    return _whole_ended_trees([(r["root"], r["id"], r["status"]) for r in rows])
