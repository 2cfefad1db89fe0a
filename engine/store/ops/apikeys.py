"""API key statements for both stores: SQLite functions (run on its writer/reader threads)
and PostgreSQL coroutines (run inside a transaction). Only hashes are ever written."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from engine.errors import NotFound
from engine.model.apikeys import ApiKey, extended_expiry
from engine.model.roles import ADMIN, WEBHOOK, Grants
from engine.store import codec
from engine.store.codec import dumps, loads, time_from_text, time_to_text

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg

COLUMNS = (
    "id, name, prefix, key_hash, admin, webhooks, triggers, created_at, expires_at, enabled,"
    " role, grants, role_migrated, rate_limit, rate_burst"
)
_PG_COLUMNS = (
    COLUMNS.replace("webhooks,", "webhooks::text AS webhooks,")
    .replace("triggers,", "triggers::text AS triggers,")
    .replace("grants", "grants::text AS grants")
)


def _role(row: Any, webhooks: list, triggers: list) -> str:
    # A row written by a process of the version before roles has only `admin` (its role
    # is the column's default): read it as the migration would have.
    if webhooks or triggers:
        return WEBHOOK
    return ADMIN if row["admin"] else row["role"]


def _record(row: Any, to_time) -> ApiKey:
    webhooks, triggers = loads(row["webhooks"]), loads(row["triggers"])
    return ApiKey(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        key_hash=row["key_hash"],
        role=_role(row, webhooks, triggers),
        grants=Grants.from_api(loads(row["grants"])),
        role_migrated=bool(row["role_migrated"]),
        webhooks=tuple(webhooks),
        triggers=tuple(triggers),
        created_at=to_time(row["created_at"]),
        expires_at=to_time(row["expires_at"]),
        enabled=bool(row["enabled"]),
        rate_limit=row["rate_limit"],
        rate_burst=row["rate_burst"],
    )


def _pg_time(value: datetime | None) -> datetime | None:
    return None if value is None else codec.as_utc(value)


def _missing(key_id: str) -> NotFound:
    return NotFound(f"no API key with id {key_id!r}")


# --- SQLite ------------------------------------------------------------------------------

_SQLITE_INSERT = (
    f"INSERT INTO api_keys ({COLUMNS}) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
    " WHERE NOT ? OR NOT EXISTS (SELECT 1 FROM api_keys)"
)


def sqlite_insert(conn: sqlite3.Connection, key: ApiKey, only_if_none: bool) -> bool:
    cursor = conn.execute(
        _SQLITE_INSERT,
        (
            key.id,
            key.name,
            key.prefix,
            key.key_hash,
            int(key.admin),
            dumps(list(key.webhooks)),
            dumps(list(key.triggers)),
            time_to_text(key.created_at),
            time_to_text(key.expires_at),
            int(key.enabled),
            key.role,
            dumps(key.grants.to_api()),
            int(key.role_migrated),
            key.rate_limit,
            key.rate_burst,
            int(only_if_none),
        ),
    )
    return cursor.rowcount == 1


def sqlite_list(conn: sqlite3.Connection) -> list[ApiKey]:
    rows = conn.execute(f"SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id").fetchall()
    return [_record(row, time_from_text) for row in rows]


def sqlite_find(conn: sqlite3.Connection, prefix: str) -> ApiKey | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM api_keys WHERE prefix = ?", (prefix,)).fetchone()
    return None if row is None else _record(row, time_from_text)


def sqlite_get(conn: sqlite3.Connection, key_id: str) -> ApiKey:
    row = conn.execute(f"SELECT {COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    if row is None:
        raise _missing(key_id)
    return _record(row, time_from_text)


def sqlite_extend(conn: sqlite3.Connection, key_id: str, by: timedelta, now: datetime) -> ApiKey:
    current = sqlite_get(conn, key_id)
    expires = extended_expiry(current.expires_at, by, now)
    conn.execute("UPDATE api_keys SET expires_at = ? WHERE id = ?", (time_to_text(expires), key_id))
    return sqlite_get(conn, key_id)


def sqlite_set_enabled(conn: sqlite3.Connection, key_id: str, enabled: bool) -> ApiKey:
    if (
        conn.execute(
            "UPDATE api_keys SET enabled = ? WHERE id = ?", (int(enabled), key_id)
        ).rowcount
        == 0
    ):
        raise _missing(key_id)
    return sqlite_get(conn, key_id)


def sqlite_set_role(conn: sqlite3.Connection, key_id: str, role: str, grants: Grants) -> ApiKey:
    updated = conn.execute(
        "UPDATE api_keys SET role = ?, grants = ?, admin = ?, role_migrated = 0 WHERE id = ?",
        (role, dumps(grants.to_api()), int(role == ADMIN), key_id),
    )
    if updated.rowcount == 0:
        raise _missing(key_id)
    return sqlite_get(conn, key_id)


def sqlite_set_rate(conn: sqlite3.Connection, key_id: str, rate: float, burst: float) -> ApiKey:
    updated = conn.execute(
        "UPDATE api_keys SET rate_limit = ?, rate_burst = ? WHERE id = ?", (rate, burst, key_id)
    )
    if updated.rowcount == 0:
        raise _missing(key_id)
    return sqlite_get(conn, key_id)


def sqlite_delete(conn: sqlite3.Connection, ids: Sequence[str]) -> list[str]:
    deleted = []
    for key_id in dict.fromkeys(ids):
        if conn.execute("DELETE FROM api_keys WHERE id = ?", (key_id,)).rowcount:
            deleted.append(key_id)
    return deleted


# --- PostgreSQL ----------------------------------------------------------------------------


async def pg_insert(conn: asyncpg.Connection, key: ApiKey, only_if_none: bool) -> bool:
    if only_if_none:
        # Two processes starting on an empty table must not both create a first key.
        await conn.execute("LOCK TABLE api_keys IN SHARE ROW EXCLUSIVE MODE")
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM api_keys)"):
            return False
    await conn.execute(
        f"INSERT INTO api_keys ({COLUMNS})"
        " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10, $11, $12::jsonb, $13,"
        " $14, $15)",
        key.id,
        key.name,
        key.prefix,
        key.key_hash,
        key.admin,
        dumps(list(key.webhooks)),
        dumps(list(key.triggers)),
        key.created_at,
        key.expires_at,
        key.enabled,
        key.role,
        dumps(key.grants.to_api()),
        key.role_migrated,
        key.rate_limit,
        key.rate_burst,
    )
    return True


async def pg_list(conn: asyncpg.Connection) -> list[ApiKey]:
    rows = await conn.fetch(f"SELECT {_PG_COLUMNS} FROM api_keys ORDER BY created_at, id")
    return [_record(row, _pg_time) for row in rows]


async def pg_find(conn: asyncpg.Connection, prefix: str) -> ApiKey | None:
    row = await conn.fetchrow(f"SELECT {_PG_COLUMNS} FROM api_keys WHERE prefix = $1", prefix)
    return None if row is None else _record(row, _pg_time)


async def pg_get(conn: asyncpg.Connection, key_id: str, lock: bool = False) -> ApiKey:
    suffix = " FOR UPDATE" if lock else ""
    row = await conn.fetchrow(f"SELECT {_PG_COLUMNS} FROM api_keys WHERE id = $1{suffix}", key_id)
    if row is None:
        raise _missing(key_id)
    return _record(row, _pg_time)


async def pg_extend(conn: asyncpg.Connection, key_id: str, by: timedelta, now: datetime) -> ApiKey:
    current = await pg_get(conn, key_id, lock=True)
    expires = extended_expiry(current.expires_at, by, now)
    await conn.execute("UPDATE api_keys SET expires_at = $1 WHERE id = $2", expires, key_id)
    return await pg_get(conn, key_id)


async def pg_set_enabled(conn: asyncpg.Connection, key_id: str, enabled: bool) -> ApiKey:
    status = await conn.execute("UPDATE api_keys SET enabled = $1 WHERE id = $2", enabled, key_id)
    if status.endswith(" 0"):
        raise _missing(key_id)
    return await pg_get(conn, key_id)


async def pg_set_role(conn: asyncpg.Connection, key_id: str, role: str, grants: Grants) -> ApiKey:
    status = await conn.execute(
        "UPDATE api_keys SET role = $1, grants = $2::jsonb, admin = $3, role_migrated = false"
        " WHERE id = $4",
        role,
        dumps(grants.to_api()),
        role == ADMIN,
        key_id,
    )
    if status.endswith(" 0"):
        raise _missing(key_id)
    return await pg_get(conn, key_id)


async def pg_set_rate(conn: asyncpg.Connection, key_id: str, rate: float, burst: float) -> ApiKey:
    status = await conn.execute(
        "UPDATE api_keys SET rate_limit = $1, rate_burst = $2 WHERE id = $3", rate, burst, key_id
    )
    if status.endswith(" 0"):
        raise _missing(key_id)
    return await pg_get(conn, key_id)


async def pg_delete(conn: asyncpg.Connection, ids: Sequence[str]) -> list[str]:
    rows = await conn.fetch(
        "DELETE FROM api_keys WHERE id = ANY($1::text[]) RETURNING id", list(dict.fromkeys(ids))
    )
    deleted = {row["id"] for row in rows}
    return [key_id for key_id in dict.fromkeys(ids) if key_id in deleted]
