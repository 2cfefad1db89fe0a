"""Statements for explain traces and queue statistics, for both stores.

Traces are written in the transaction that records a trigger instance's enforcements
(`record_enforcements(..., evaluations=...)`), so an instance is never processed without
its trace or traced without being processed. SQLite functions run on the store's threads;
PostgreSQL coroutines run inside its transaction.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from engine.model.records import EnforcementOutcome
from engine.store import postgres_ops, sqlite_ops
from engine.store.codec import dumps, loads, time_to_text

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


# --- SQLite ------------------------------------------------------------------------------


def sqlite_record_enforcements(
    conn: sqlite3.Connection,
    instance_id: str,
    lease_token: str,
    outcomes: Sequence[EnforcementOutcome],
    final_status: str,
    now: datetime,
    evaluations: Evaluations | None,
) -> tuple[list[str], int]:
    result = sqlite_ops.record_enforcements(
        conn, instance_id, lease_token, outcomes, final_status, now
    )
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


# --- PostgreSQL --------------------------------------------------------------------------


async def pg_record_enforcements(
    conn: asyncpg.Connection,
    instance_id: str,
    lease_token: str,
    outcomes: Sequence[EnforcementOutcome],
    final_status: str,
    now: datetime,
    evaluations: Evaluations | None,
) -> list[str]:
    written = await postgres_ops.record_enforcements(
        conn, instance_id, lease_token, outcomes, final_status, now
    )
    if evaluations is not None:
        await conn.execute(
            postgres_ops.UPSERT_EVALUATIONS,
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
