"""Datastore (st2kv) statements for both stores: SQLite functions (run on its writer/reader
threads) and PostgreSQL coroutines (run inside a transaction).

An expired pair is invisible to every read and is purged by the next write; a secret's
value is stored as the ciphertext it arrives as (engine.secrets.encryption encrypts
above the store).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engine.errors import NotFound
from engine.model.kv import SYSTEM_SCOPE, KeyValuePair
from engine.store import codec
from engine.store.codec import time_from_text, time_to_text

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg

COLUMNS = "scope, user_name, name, id, value, secret, expire_timestamp, created_at, updated_at"


def _record(row: Any, to_time) -> KeyValuePair:
    return KeyValuePair(
        name=row["name"],
        value=row["value"],
        scope=row["scope"],
        user=row["user_name"] or None,
        secret=bool(row["secret"]),
        expire_timestamp=to_time(row["expire_timestamp"]),
        id=row["id"],
        created_at=to_time(row["created_at"]),
        updated_at=to_time(row["updated_at"]),
    )


def _pg_time(value: datetime | None) -> datetime | None:
    return None if value is None else codec.as_utc(value)


def _owner(scope: str, user: str | None) -> str:
    return "" if scope == SYSTEM_SCOPE else user or ""


def _missing(name: str, scope: str, user: str | None) -> NotFound:
    owner = f" of user {user!r}" if scope != SYSTEM_SCOPE else ""
    return NotFound(f'datastore key "{name}" not found in scope {scope}{owner}')


def _list_conditions(
    prefix: str | None, scope: str | None, user: str | None, placeholder
) -> tuple[str, list[Any]]:
    """WHERE clauses (after the expiry one) and their arguments; `placeholder(n)` names
    the n-th argument in the driver's style."""
    clauses: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return placeholder(len(args) + 1)  # argument 1 is `now`

    if scope is not None:
        clauses.append(f"scope = {arg(scope)}")
    if user is not None:
        # A user filter keeps the system scope whole: it narrows only user-scoped keys.
        clauses.append(f"(scope = {arg(SYSTEM_SCOPE)} OR user_name = {arg(user)})")
    if prefix:
        # substr, not LIKE: a prefix holding % or _ matches only itself.
        clauses.append(f"substr(name, 1, {arg(len(prefix))}) = {arg(prefix)}")
    return "".join(f" AND {clause}" for clause in clauses), args


# --- SQLite ------------------------------------------------------------------------------

_SQLITE_LIVE = "(expire_timestamp IS NULL OR expire_timestamp > ?)"


def sqlite_put(conn: sqlite3.Connection, pair: KeyValuePair, now: datetime) -> KeyValuePair:
    now_text = time_to_text(now)
    conn.execute(
        "DELETE FROM kv_pairs WHERE expire_timestamp IS NOT NULL AND expire_timestamp <= ?",
        (now_text,),
    )
    owner = _owner(pair.scope, pair.user)
    conn.execute(
        f"INSERT INTO kv_pairs ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (scope, user_name, name) DO UPDATE SET value = excluded.value,"
        " secret = excluded.secret, expire_timestamp = excluded.expire_timestamp,"
        " updated_at = excluded.updated_at",
        (
            pair.scope,
            owner,
            pair.name,
            pair.id,
            pair.value,
            int(pair.secret),
            time_to_text(pair.expire_timestamp),
            now_text,
            now_text,
        ),
    )
    row = conn.execute(
        f"SELECT {COLUMNS} FROM kv_pairs WHERE scope = ? AND user_name = ? AND name = ?",
        (pair.scope, owner, pair.name),
    ).fetchone()
    return _record(row, time_from_text)


def sqlite_get(
    conn: sqlite3.Connection, name: str, scope: str, user: str | None, now: datetime
) -> KeyValuePair:
    row = conn.execute(
        f"SELECT {COLUMNS} FROM kv_pairs WHERE scope = ? AND user_name = ? AND name = ?"
        f" AND {_SQLITE_LIVE}",
        (scope, _owner(scope, user), name, time_to_text(now)),
    ).fetchone()
    if row is None:
        raise _missing(name, scope, user)
    return _record(row, time_from_text)


def sqlite_list(
    conn: sqlite3.Connection,
    prefix: str | None,
    scope: str | None,
    user: str | None,
    now: datetime,
) -> list[KeyValuePair]:
    where, args = _list_conditions(prefix, scope, user, lambda n: "?")
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM kv_pairs WHERE {_SQLITE_LIVE}{where}"
        " ORDER BY scope, user_name, name",
        (time_to_text(now), *args),
    ).fetchall()
    return [_record(row, time_from_text) for row in rows]


def sqlite_delete(
    conn: sqlite3.Connection, name: str, scope: str, user: str | None, now: datetime
) -> bool:
    cursor = conn.execute(
        f"DELETE FROM kv_pairs WHERE scope = ? AND user_name = ? AND name = ? AND {_SQLITE_LIVE}",
        (scope, _owner(scope, user), name, time_to_text(now)),
    )
    return cursor.rowcount > 0


# --- PostgreSQL ----------------------------------------------------------------------------

_PG_LIVE = "(expire_timestamp IS NULL OR expire_timestamp > $1)"


async def pg_put(conn: asyncpg.Connection, pair: KeyValuePair, now: datetime) -> KeyValuePair:
    await conn.execute(
        "DELETE FROM kv_pairs WHERE expire_timestamp IS NOT NULL AND expire_timestamp <= $1",
        now,
    )
    row = await conn.fetchrow(
        f"INSERT INTO kv_pairs ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)"
        " ON CONFLICT (scope, user_name, name) DO UPDATE SET value = excluded.value,"
        " secret = excluded.secret, expire_timestamp = excluded.expire_timestamp,"
        f" updated_at = excluded.updated_at RETURNING {COLUMNS}",
        pair.scope,
        _owner(pair.scope, pair.user),
        pair.name,
        pair.id,
        pair.value,
        pair.secret,
        pair.expire_timestamp,
        now,
    )
    return _record(row, _pg_time)


async def pg_get(
    conn: asyncpg.Connection, name: str, scope: str, user: str | None, now: datetime
) -> KeyValuePair:
    row = await conn.fetchrow(
        f"SELECT {COLUMNS} FROM kv_pairs WHERE {_PG_LIVE}"
        " AND scope = $2 AND user_name = $3 AND name = $4",
        now,
        scope,
        _owner(scope, user),
        name,
    )
    if row is None:
        raise _missing(name, scope, user)
    return _record(row, _pg_time)


async def pg_list(
    conn: asyncpg.Connection,
    prefix: str | None,
    scope: str | None,
    user: str | None,
    now: datetime,
) -> list[KeyValuePair]:
    where, args = _list_conditions(prefix, scope, user, lambda n: f"${n}")
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM kv_pairs WHERE {_PG_LIVE}{where}"
        # Byte order, as SQLite sorts, whatever the database's collation.
        ' ORDER BY scope COLLATE "C", user_name COLLATE "C", name COLLATE "C"',
        now,
        *args,
    )
    return [_record(row, _pg_time) for row in rows]


async def pg_delete(
    conn: asyncpg.Connection, name: str, scope: str, user: str | None, now: datetime
) -> bool:
    status = await conn.execute(
        f"DELETE FROM kv_pairs WHERE {_PG_LIVE} AND scope = $2 AND user_name = $3 AND name = $4",
        now,
        scope,
        _owner(scope, user),
        name,
    )
    return not status.endswith(" 0")
