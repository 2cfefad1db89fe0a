"""Outbound subscriptions, both dialects: create, read, change, delete, and the one
configured by `outbound.global_webhook_url`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engine.errors import Conflict, NotFound
from engine.outbound.subscriptions import GLOBAL_SUBSCRIPTION_ID, Subscription
from engine.store import outbound_rows as rows
from engine.store.codec import as_utc, dumps, time_to_text
from engine.store.ops import columns

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg

# --- SQLite (plain functions run on the store's threads, in its transactions) ---


def sqlite_insert(conn: sqlite3.Connection, sub: Subscription) -> None:
    values = [_sqlite_value(name, getattr(sub, name)) for name in rows.SUBSCRIPTION_FIELDS]
    marks = ", ".join("?" * len(values))
    conn.execute(
        f"INSERT INTO subscriptions ({columns.SUBSCRIPTION_COLUMNS}) VALUES ({marks})", values
    )


def _sqlite_value(name: str, value: Any) -> Any:
    if isinstance(value, datetime):
        return time_to_text(value)
    if name == "enabled":
        return int(bool(value))
    return rows.column_value(name, value)


def sqlite_get(conn: sqlite3.Connection, subscription_id: str) -> Subscription:
    row = conn.execute(
        f"SELECT {columns.SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = ?", (subscription_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"subscription {subscription_id!r} not found")
    return columns.sqlite_subscription(row)


def sqlite_list(conn: sqlite3.Connection) -> list[Subscription]:
    found = conn.execute(
        f"SELECT {columns.SUBSCRIPTION_COLUMNS} FROM subscriptions ORDER BY created_at, id"
    ).fetchall()
    return [columns.sqlite_subscription(row) for row in found]


def sqlite_update(
    conn: sqlite3.Connection, subscription_id: str, changes: Mapping[str, Any]
) -> Subscription:
    unknown = set(changes) - rows.UPDATABLE
    if unknown:
        raise Conflict(f"subscription columns {sorted(unknown)} cannot be updated")
    if changes:
        assignments = ", ".join(f"{name} = ?" for name in changes)
        values = [_sqlite_value(name, value) for name, value in changes.items()]
        conn.execute(
            f"UPDATE subscriptions SET {assignments} WHERE id = ?", [*values, subscription_id]
        )
    return sqlite_get(conn, subscription_id)


def sqlite_delete(conn: sqlite3.Connection, subscription_id: str) -> None:
    if conn.execute("DELETE FROM subscriptions WHERE id = ?", (subscription_id,)).rowcount == 0:
        raise NotFound(f"subscription {subscription_id!r} not found")
    conn.execute("DELETE FROM deliveries WHERE subscription_id = ?", (subscription_id,))


def sqlite_put_global(conn: sqlite3.Connection, sub: Subscription | None) -> None:
    """Create or update the configured subscription (keeping its secret); None disables it."""
    if sub is None:
        conn.execute(
            "UPDATE subscriptions SET enabled = 0, disabled_reason = ? WHERE id = ?",
            ("outbound.global_webhook_url is no longer set", GLOBAL_SUBSCRIPTION_ID),
        )
        return
    exists = conn.execute(
        "SELECT 1 FROM subscriptions WHERE id = ?", (GLOBAL_SUBSCRIPTION_ID,)
    ).fetchone()
    if exists is None:
        sqlite_insert(conn, sub)
        return
    conn.execute(
        "UPDATE subscriptions SET url = ?, custom_headers = ?, events = '[]', enabled = 1,"
        " disabled_reason = NULL WHERE id = ? AND (url <> ? OR custom_headers <> ?"
        " OR enabled = 0)",
        (
            sub.url,
            dumps(sub.custom_headers),
            GLOBAL_SUBSCRIPTION_ID,
            sub.url,
            dumps(sub.custom_headers),
        ),
    )


# --- PostgreSQL (coroutines on a pool connection, in a transaction) ---


def _pg_value(name: str, value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value)
    if name == "enabled":
        return bool(value)
    return rows.column_value(name, value)


async def pg_insert(conn: asyncpg.Connection, sub: Subscription) -> None:
    values = [_pg_value(name, getattr(sub, name)) for name in rows.SUBSCRIPTION_FIELDS]
    marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    await conn.execute(
        f"INSERT INTO subscriptions ({columns.SUBSCRIPTION_COLUMNS}) VALUES ({marks})", *values
    )


async def pg_get(conn: asyncpg.Connection, subscription_id: str) -> Subscription:
    row = await conn.fetchrow(
        f"SELECT {columns.SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = $1", subscription_id
    )
    if row is None:
        raise NotFound(f"subscription {subscription_id!r} not found")
    return columns.pg_subscription(row)


async def pg_list(conn: asyncpg.Connection) -> list[Subscription]:
    found = await conn.fetch(
        f"SELECT {columns.SUBSCRIPTION_COLUMNS} FROM subscriptions ORDER BY created_at, id"
    )
    return [columns.pg_subscription(row) for row in found]


async def pg_update(
    conn: asyncpg.Connection, subscription_id: str, changes: Mapping[str, Any]
) -> Subscription:
    unknown = set(changes) - rows.UPDATABLE
    if unknown:
        raise Conflict(f"subscription columns {sorted(unknown)} cannot be updated")
    if changes:
        names = list(changes)
        assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=2))
        await conn.execute(
            f"UPDATE subscriptions SET {assignments} WHERE id = $1",
            subscription_id,
            *[_pg_value(name, changes[name]) for name in names],
        )
    return await pg_get(conn, subscription_id)


async def pg_delete(conn: asyncpg.Connection, subscription_id: str) -> None:
    deleted = await conn.fetchval(
        "DELETE FROM subscriptions WHERE id = $1 RETURNING id", subscription_id
    )
    if deleted is None:
        raise NotFound(f"subscription {subscription_id!r} not found")
    await conn.execute("DELETE FROM deliveries WHERE subscription_id = $1", subscription_id)


async def pg_put_global(conn: asyncpg.Connection, sub: Subscription | None) -> None:
    if sub is None:
        await conn.execute(
            "UPDATE subscriptions SET enabled = false, disabled_reason = $2 WHERE id = $1",
            GLOBAL_SUBSCRIPTION_ID,
            "outbound.global_webhook_url is no longer set",
        )
        return
    values = [_pg_value(name, getattr(sub, name)) for name in rows.SUBSCRIPTION_FIELDS]
    marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    inserted = await conn.fetchval(
        f"INSERT INTO subscriptions ({columns.SUBSCRIPTION_COLUMNS}) VALUES ({marks})"
        " ON CONFLICT (id) DO NOTHING RETURNING id",
        *values,
    )
    if inserted is None:
        await conn.execute(
            "UPDATE subscriptions SET url = $2, custom_headers = $3, events = '[]',"
            " enabled = true, disabled_reason = NULL"
            " WHERE id = $1 AND (url <> $2 OR custom_headers <> $3 OR NOT enabled)",
            GLOBAL_SUBSCRIPTION_ID,
            sub.url,
            dumps(sub.custom_headers),
        )
