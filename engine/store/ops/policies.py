"""Concurrency slots of action policies, both dialects (engine.packs.policy_decisions).

A slot is a row of `execution_slots` (key, execution). It counts while its execution is
active (_HOLDING: scheduled, running...), never while it waits or once it ended, so a
slot frees itself in the very transaction that ends its execution, whoever ends it: the
worker, a cancel, or the claim that abandons the execution of a killed worker. Nothing is
released by hand, so a `kill -9` never leaves a slot counted forever.

Taking slots is one transaction: count the active holders of each key, then take every
slot or none. SQLite has one writer, so two takers never interleave; on PostgreSQL a
transaction-scoped advisory lock per key (taken in key order, so two takers cannot
deadlock) serialises the takers of one key across every process sharing the database.

A `delayed` execution waits without a lease; `requeue_delayed` makes it `requested` again
(when a slot of its action frees, and by a periodic sweep), and it takes its turn anew.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from engine.model.records import DELAYED, REQUESTED, TERMINAL_EXECUTION_STATUSES, Execution
from engine.outbound import events as outbound_events
from engine.store.codec import time_to_text
from engine.store.ops import columns, outbox

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg

# Statuses in which an execution holds its slot: StackStorm counts scheduled and running
# ones; canceling, pausing and resuming ones still have a run or tasks going. A paused
# workflow, as in StackStorm, does not count.
_HOLDING = "('scheduled', 'running', 'canceling', 'pausing', 'resuming')"

# (key, threshold) pairs, sorted by key.
SlotRequest = Sequence[tuple[str, int]]


# --- SQLite ------------------------------------------------------------------------------


def sqlite_take_slots(
    conn: sqlite3.Connection,
    execution_id: str,
    lease_token: str,
    slots: SlotRequest,
    now: datetime,
) -> str | None:
    """Take every slot for the (scheduled, leased) execution; the first full key, or None
    when all were taken. LeaseLost when the execution is no longer this worker's."""
    row = conn.execute(
        "SELECT 1 FROM executions WHERE id = ? AND lease_token = ? AND status = 'scheduled'",
        (execution_id, lease_token),
    ).fetchone()
    if row is None:
        raise columns.sqlite_missing_or_lost(conn, "executions", "execution", execution_id)
    for key, threshold in slots:
        (held,) = conn.execute(
            "SELECT count(*) FROM execution_slots s JOIN executions e ON e.id = s.execution_id"
            f" WHERE s.slot_key = ? AND s.execution_id <> ? AND e.status IN {_HOLDING}",
            (key, execution_id),
        ).fetchone()
        if held >= threshold:
            return key
    for key, _ in slots:
        # Rows of ended executions only cost space: dropped as their key is used again.
        conn.execute(
            "DELETE FROM execution_slots WHERE slot_key = ? AND execution_id IN"
            " (SELECT e.id FROM execution_slots s JOIN executions e ON e.id = s.execution_id"
            f"  WHERE s.slot_key = ? AND e.status IN {_terminal()})",
            (key, key),
        )
        conn.execute(
            "INSERT OR IGNORE INTO execution_slots (slot_key, execution_id, taken_at)"
            " VALUES (?, ?, ?)",
            (key, execution_id, time_to_text(now)),
        )
    return None


def sqlite_delay(
    conn: sqlite3.Connection, execution_id: str, lease_token: str, now: datetime
) -> Execution:
    at = time_to_text(now)
    row = conn.execute(
        "UPDATE executions SET status = ?, lease_token = NULL, lease_expires_at = NULL,"
        f" updated_at = ?, {columns.SQLITE_APPEND_LOG}"
        " WHERE id = ? AND lease_token = ? AND status = 'scheduled'"
        f" RETURNING {columns.SQLITE_EXECUTION_COLUMNS}",
        (DELAYED, at, columns.sqlite_log_param(DELAYED, now), execution_id, lease_token),
    ).fetchone()
    if row is None:
        raise columns.sqlite_missing_or_lost(conn, "executions", "execution", execution_id)
    conn.execute("DELETE FROM execution_slots WHERE execution_id = ?", (execution_id,))
    execution = columns.sqlite_execution(row)
    outbox.sqlite_emit(conn, now, lambda: [outbound_events.execution_updated(execution)])
    return execution


def sqlite_requeue_delayed(
    conn: sqlite3.Connection,
    action: str | None,
    limit: int,
    waited_seconds: float,
    now: datetime,
) -> int:
    """Make up to `limit` delayed executions (of `action`, or any) requested again, oldest
    first, those delayed at least `waited_seconds` ago."""
    at = time_to_text(now)
    rows = conn.execute(
        f"UPDATE executions SET status = ?, updated_at = ?, {columns.SQLITE_APPEND_LOG}"
        " WHERE id IN (SELECT id FROM executions WHERE status = ?"
        "  AND (? IS NULL OR action = ?) AND updated_at <= ? ORDER BY id LIMIT ?)"
        f" RETURNING {columns.SQLITE_EXECUTION_COLUMNS}",
        (
            REQUESTED,
            at,
            columns.sqlite_log_param(REQUESTED, now),
            DELAYED,
            action,
            action,
            time_to_text(now - timedelta(seconds=waited_seconds)),
            limit,
        ),
    ).fetchall()
    if rows:
        outbox.sqlite_emit(
            conn,
            now,
            lambda: [outbound_events.execution_updated(columns.sqlite_execution(r)) for r in rows],
        )
    return len(rows)


# --- PostgreSQL --------------------------------------------------------------------------


async def pg_take_slots(
    conn: asyncpg.Connection,
    execution_id: str,
    lease_token: str,
    slots: SlotRequest,
    now: datetime,
) -> str | None:
    for key, _ in slots:  # sorted by key: two takers lock in the same order
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)
    found = await conn.fetchval(
        "SELECT 1 FROM executions WHERE id = $1 AND lease_token = $2 AND status = 'scheduled'"
        " FOR UPDATE",
        execution_id,
        lease_token,
    )
    if found is None:
        raise await columns.pg_missing_or_lost(conn, "executions", "execution", execution_id)
    for key, threshold in slots:
        held = await conn.fetchval(
            "SELECT count(*) FROM execution_slots s JOIN executions e ON e.id = s.execution_id"
            f" WHERE s.slot_key = $1 AND s.execution_id <> $2 AND e.status IN {_HOLDING}",
            key,
            execution_id,
        )
        if held >= threshold:
            return key
    for key, _ in slots:
        await conn.execute(
            "DELETE FROM execution_slots s USING executions e WHERE s.slot_key = $1"
            f" AND e.id = s.execution_id AND e.status IN {_terminal()}",
            key,
        )
        await conn.execute(
            "INSERT INTO execution_slots (slot_key, execution_id, taken_at)"
            " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            key,
            execution_id,
            now,
        )
    return None


async def pg_delay(
    conn: asyncpg.Connection, execution_id: str, lease_token: str, now: datetime
) -> Execution:
    row = await conn.fetchrow(
        "UPDATE executions SET status = $3, lease_token = NULL, lease_expires_at = NULL,"
        " updated_at = now(), log = log || $4::jsonb"
        " WHERE id = $1 AND lease_token = $2 AND status = 'scheduled'"
        f" RETURNING {columns.PG_EXECUTION_COLUMNS}",
        execution_id,
        lease_token,
        DELAYED,
        columns.pg_log_param(DELAYED, now),
    )
    if row is None:
        raise await columns.pg_missing_or_lost(conn, "executions", "execution", execution_id)
    await conn.execute("DELETE FROM execution_slots WHERE execution_id = $1", execution_id)
    execution = columns.pg_execution(row)
    await outbox.pg_emit(conn, now, lambda: [outbound_events.execution_updated(execution)])
    return execution


async def pg_requeue_delayed(
    conn: asyncpg.Connection,
    action: str | None,
    limit: int,
    waited_seconds: float,
    now: datetime,
) -> int:
    rows = await conn.fetch(
        "UPDATE executions SET status = $1, updated_at = now(), log = log || $2::jsonb"
        " WHERE id IN (SELECT id FROM executions WHERE status = $3"
        "  AND ($4::text IS NULL OR action = $4)"
        "  AND updated_at <= now() - make_interval(secs => $5)"
        "  ORDER BY id LIMIT $6 FOR UPDATE SKIP LOCKED)"
        f" RETURNING {columns.PG_EXECUTION_COLUMNS}",
        REQUESTED,
        columns.pg_log_param(REQUESTED, now),
        DELAYED,
        action,
        float(waited_seconds),
        limit,
    )
    if rows:
        await outbox.pg_emit(
            conn,
            now,
            lambda: [outbound_events.execution_updated(columns.pg_execution(r)) for r in rows],
        )
        await columns.pg_notify(conn, "executions")
    return len(rows)


def _terminal() -> str:
    return "(" + ", ".join(f"'{s}'" for s in sorted(TERMINAL_EXECUTION_STATUSES)) + ")"
