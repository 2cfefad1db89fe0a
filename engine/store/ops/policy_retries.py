"""Retries of action.retry policies, both dialects: recorded so that none is lost or doubled.

A row of `execution_retries` per execution a retry policy may re-run: written (pending)
before the execution's end is recorded, and deleted (settled) in the transaction that
creates the retry, or decides there is none. A worker killed between the two leaves it
pending; the sweep (engine.workers.policies) settles it. Only the transaction that
deletes the row creates the retry, so the worker and any number of sweepers make one.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from engine.model.records import TERMINAL_EXECUTION_STATUSES, Execution, NewExecution
from engine.store.codec import time_to_text
from engine.store.ops import columns, executions

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg

_ENDED = "(" + ", ".join(f"'{s}'" for s in sorted(TERMINAL_EXECUTION_STATUSES)) + ")"


# --- SQLite ------------------------------------------------------------------------------


def sqlite_mark_pending(conn: sqlite3.Connection, original_id: str, now: datetime) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO execution_retries (original_id, created_at) VALUES (?, ?)",
        (original_id, time_to_text(now)),
    )


def sqlite_settle(
    conn: sqlite3.Connection, original_id: str, new: NewExecution | None, now: datetime
) -> bool:
    """Settle the pending retry of `original_id`, creating `new` (None: no retry after
    all); False when it was not pending (settled already, or never marked)."""
    settled = conn.execute(
        "DELETE FROM execution_retries WHERE original_id = ?", (original_id,)
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
        f" WHERE r.created_at <= ? AND e.status IN {_ENDED}"
        " ORDER BY r.original_id LIMIT ?",
        (time_to_text(now - timedelta(seconds=waited_seconds)), limit),
    ).fetchall()
    return [columns.sqlite_execution(row) for row in rows]


# --- PostgreSQL --------------------------------------------------------------------------


async def pg_mark_pending(conn: asyncpg.Connection, original_id: str, now: datetime) -> None:
    await conn.execute(
        "INSERT INTO execution_retries (original_id, created_at) VALUES ($1, now())"
        " ON CONFLICT DO NOTHING",
        original_id,
    )


async def pg_settle(
    conn: asyncpg.Connection, original_id: str, new: NewExecution | None, now: datetime
) -> bool:
    settled = await conn.fetchval(
        "DELETE FROM execution_retries WHERE original_id = $1 RETURNING 1", original_id
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
        " WHERE r.created_at <= now() - make_interval(secs => $1)"
        f" AND e.status IN {_ENDED} ORDER BY r.original_id LIMIT $2",
        float(waited_seconds),
        limit,
    )
    return [columns.pg_execution(row) for row in rows]


def _prefixed(column_list: str) -> str:
    # The executions' columns, read through the join's `e` alias.
    return ", ".join(f"e.{c.strip()}" for c in column_list.split(","))
