"""Retries of action.retry policies, both dialects: recorded so that none is lost or doubled.

A row of `execution_retries` per execution a retry policy will re-run: written `pending`
before the execution's end is recorded, settled (`done`, with the retry's id or none) in
the transaction that creates the retry. A worker killed between the two leaves it
pending; the sweep (engine.workers.policies) settles it. Settling is conditional on the
row still being pending, so the worker and any number of sweepers create one retry.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta

import asyncpg

from engine.model.records import TERMINAL_EXECUTION_STATUSES, Execution, NewExecution
from engine.store.codec import time_to_text
from engine.store.ops import columns, executions

PENDING = "pending"
DONE = "done"
_ENDED = "(" + ", ".join(f"'{s}'" for s in sorted(TERMINAL_EXECUTION_STATUSES)) + ")"


# --- SQLite ------------------------------------------------------------------------------


def sqlite_mark_pending(conn: sqlite3.Connection, original_id: str, now: datetime) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO execution_retries (original_id, state, created_at) VALUES (?, ?, ?)",
        (original_id, PENDING, time_to_text(now)),
    )


def sqlite_settle(
    conn: sqlite3.Connection, original_id: str, new: NewExecution | None, now: datetime
) -> bool:
    """Settle the pending retry of `original_id`, creating `new` (None: no retry after
    all); False when it was not pending (settled already, or never marked)."""
    settled = conn.execute(
        "UPDATE execution_retries SET state = ?, retry_id = ? WHERE original_id = ? AND state = ?",
        (DONE, new.id if new else None, original_id, PENDING),
    ).rowcount
    if settled and new is not None:
        executions.sqlite_insert(conn, new, now)
    return bool(settled)


def sqlite_pending(
    conn: sqlite3.Connection, limit: int, waited_seconds: float, now: datetime
) -> list[Execution]:
    """Ended executions whose retry has been pending `waited_seconds` or longer."""
    rows = conn.execute(
        f"SELECT {_prefixed(columns.SQLITE_EXECUTION_COLUMNS)} FROM execution_retries r"
        " JOIN executions e ON e.id = r.original_id"
        f" WHERE r.state = ? AND r.created_at <= ? AND e.status IN {_ENDED}"
        " ORDER BY r.original_id LIMIT ?",
        (PENDING, time_to_text(now - timedelta(seconds=waited_seconds)), limit),
    ).fetchall()
    return [columns.sqlite_execution(row) for row in rows]


# --- PostgreSQL --------------------------------------------------------------------------


async def pg_mark_pending(conn: asyncpg.Connection, original_id: str, now: datetime) -> None:
    await conn.execute(
        "INSERT INTO execution_retries (original_id, state, created_at) VALUES ($1, $2, now())"
        " ON CONFLICT DO NOTHING",
        original_id,
        PENDING,
    )


async def pg_settle(
    conn: asyncpg.Connection, original_id: str, new: NewExecution | None, now: datetime
) -> bool:
    settled = await conn.fetchval(
        "UPDATE execution_retries SET state = $1, retry_id = $2"
        " WHERE original_id = $3 AND state = $4 RETURNING 1",
        DONE,
        new.id if new else None,
        original_id,
        PENDING,
    )
    if settled and new is not None:
        await executions.pg_insert(conn, new, now)
        await columns.pg_notify(conn, "executions")
    return bool(settled)


async def pg_pending(
    conn: asyncpg.Connection, limit: int, waited_seconds: float, now: datetime
) -> list[Execution]:
    rows = await conn.fetch(
        f"SELECT {_prefixed(columns.PG_EXECUTION_COLUMNS)} FROM execution_retries r"
        " JOIN executions e ON e.id = r.original_id"
        " WHERE r.state = $1 AND r.created_at <= now() - make_interval(secs => $2)"
        f" AND e.status IN {_ENDED} ORDER BY r.original_id LIMIT $3",
        PENDING,
        float(waited_seconds),
        limit,
    )
    return [columns.pg_execution(row) for row in rows]


def _prefixed(column_list: str) -> str:
    # The executions' columns, read through the join's `e` alias.
    return ", ".join(f"e.{c.strip()}" for c in column_list.split(","))
