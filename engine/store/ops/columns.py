"""The columns each dialect reads and how its rows become records, shared by the op
modules; and the listed pages (trigger instances, enforcements, executions).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from engine.errors import LeaseLost, NotFound
from engine.model.records import Enforcement, Execution, Page, TriggerInstance
from engine.outbound.delivery import Delivery
from engine.outbound.subscriptions import Subscription
from engine.store import codec
from engine.store import outbound_rows as rows
from engine.store.codec import Condition, dumps, time_from_text
from engine.store.paging import postgres_page, sqlite_page

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg

SUBSCRIPTION_COLUMNS = ", ".join(rows.SUBSCRIPTION_FIELDS)


DELIVERY_COLUMNS = ", ".join(rows.DELIVERY_FIELDS)


PREFIXED_SUBSCRIPTION = ", ".join(f"s.{c} AS s_{c}" for c in rows.SUBSCRIPTION_FIELDS)


# --- SQLite (plain functions run on the store's threads, in its transactions) ---


SQLITE_INSTANCE_COLUMNS = (
    "id, trigger, payload, occurrence_time, status, webhook, dedupe_key, lease_token, claims"
)


SQLITE_EXECUTION_COLUMNS = (
    "id, action, parameters, status, result, context, created_at, started_at, finished_at,"
    " attempt, log, lease_token, lease_expires_at, parent_id, run_after"
)


SQLITE_ENFORCEMENT_COLUMNS = (
    "id, trigger_instance_id, rule_ref, rule_id, status, failure_reason, execution_id,"
    " enforced_at, trace"
)


SQLITE_APPEND_LOG = "log = json_insert(log, '$[#]', json(?))"


def sqlite_instance(row: sqlite3.Row) -> TriggerInstance:
    return codec.trigger_instance_from_row(row, time_from_text)


def sqlite_execution(row: sqlite3.Row) -> Execution:
    return codec.execution_from_row(row, time_from_text)


def sqlite_enforcement(row: sqlite3.Row) -> Enforcement:
    return codec.enforcement_from_row(row, time_from_text)


def sqlite_log_param(status: str, now: datetime) -> str:
    return dumps(codec.log_entry(status, now))


def sqlite_missing_or_lost(
    conn: sqlite3.Connection, table: str, what: str, row_id: str
) -> Exception:
    if conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (row_id,)).fetchone() is None:
        return NotFound(f"{what} {row_id!r} not found")
    return LeaseLost(
        f"{what} {row_id!r}: the lease token is no longer current"
        " (the lease expired and another worker claimed it, or the work already finished)"
    )


_SQLITE_LISTS = {
    "trigger_instances": (SQLITE_INSTANCE_COLUMNS, "occurrence_time", sqlite_instance),
    "enforcements": (SQLITE_ENFORCEMENT_COLUMNS, "enforced_at", sqlite_enforcement),
    "executions": (SQLITE_EXECUTION_COLUMNS, "created_at", sqlite_execution),
}


def sqlite_list_rows(
    conn: sqlite3.Connection,
    table: str,
    conditions: Sequence[Condition],
    limit: int,
    offset: int,
) -> Page:
    """One page of a listed table (trigger instances, enforcements, executions)."""
    columns, time_column, to_record = _SQLITE_LISTS[table]
    return sqlite_page(
        conn, table, columns, f"{time_column} DESC, id DESC", to_record, conditions, limit, offset
    )


def sqlite_subscription(row: sqlite3.Row, prefix: str = "") -> Subscription:
    return rows.subscription_from_row(row, time_from_text, prefix)


def sqlite_delivery(row: sqlite3.Row) -> Delivery:
    return rows.delivery_from_row(row, time_from_text)


# --- PostgreSQL (coroutines on a pool connection, in a transaction) ---


PG_INSTANCE_COLUMNS = (
    "id, trigger, payload::text AS payload, occurrence_time, status, webhook, dedupe_key,"
    " lease_token, claims"
)


PG_EXECUTION_COLUMNS = (
    "id, action, parameters::text AS parameters, status, result::text AS result,"
    " context::text AS context, created_at, started_at, finished_at, attempt,"
    " log::text AS log, lease_token, lease_expires_at, parent_id, run_after"
)


PG_ENFORCEMENT_COLUMNS = (
    "id, trigger_instance_id, rule_ref, rule_id, status, failure_reason, execution_id,"
    " enforced_at, trace::text AS trace"
)


PG_NEW_TOKEN = "replace(gen_random_uuid()::text, '-', '')"


def channel(queue: str) -> str:
    return f"hookyard_{queue}"


def pg_time(value: datetime | None) -> datetime | None:
    return None if value is None else codec.as_utc(value)


def pg_instance(row: asyncpg.Record) -> TriggerInstance:
    return codec.trigger_instance_from_row(row, pg_time)


def pg_execution(row: asyncpg.Record) -> Execution:
    return codec.execution_from_row(row, pg_time)


def pg_log_param(status: str, now: datetime) -> str:
    return dumps([codec.log_entry(status, now)])


async def pg_notify(conn: asyncpg.Connection, queue: str) -> None:
    # Delivered at commit; listeners treat it as a hint to claim now.
    await conn.execute("SELECT pg_notify($1, '')", channel(queue))


async def pg_missing_or_lost(
    conn: asyncpg.Connection, table: str, what: str, row_id: str
) -> Exception:
    if await conn.fetchval(f"SELECT 1 FROM {table} WHERE id = $1", row_id) is None:
        return NotFound(f"{what} {row_id!r} not found")
    return LeaseLost(
        f"{what} {row_id!r}: the lease token is no longer current"
        " (the lease expired and another worker claimed it, or the work already finished)"
    )


_PG_LISTS = {
    "trigger_instances": (PG_INSTANCE_COLUMNS, "occurrence_time", pg_instance),
    "enforcements": (
        PG_ENFORCEMENT_COLUMNS,
        "enforced_at",
        lambda row: codec.enforcement_from_row(row, pg_time),
    ),
    "executions": (PG_EXECUTION_COLUMNS, "created_at", pg_execution),
}


async def pg_list_rows(
    conn: asyncpg.Connection,
    table: str,
    conditions: Sequence[Condition],
    limit: int,
    offset: int,
) -> Page:
    """One page of a listed table (trigger instances, enforcements, executions)."""
    columns, time_column, to_record = _PG_LISTS[table]
    return await postgres_page(
        conn, table, columns, f"{time_column} DESC, id DESC", to_record, conditions, limit, offset
    )


def pg_subscription(row: asyncpg.Record, prefix: str = "") -> Subscription:
    return rows.subscription_from_row(row, pg_time, prefix)


def pg_delivery(row: asyncpg.Record) -> Delivery:
    return rows.delivery_from_row(row, pg_time)
