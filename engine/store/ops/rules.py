"""Rules stored through the API, for both stores: SQLite functions (run on its writer or
reader threads) and PostgreSQL coroutines (run inside a transaction).

Every write bumps the one-row `rules_version` counter in the same transaction, so a
process that polls the counter sees each committed change.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engine.errors import Conflict, NotFound
from engine.model.stored_rules import StoredRule
from engine.store import codec
from engine.store.codec import dumps, time_from_text, time_to_text

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg

# An upsert, so an emptied table (tests truncate every table) counts on from 1.
_BUMP = (
    "INSERT INTO rules_version (id, version) VALUES (1, 1)"
    " ON CONFLICT (id) DO UPDATE SET version = rules_version.version + 1"
)
_VERSION = "SELECT coalesce(max(version), 0) FROM rules_version"


def _exists(ref: str) -> Conflict:
    return Conflict(f"rule {ref!r} already exists; update it with PUT /api/v1/rules/{ref}")


def _missing(ref: str) -> NotFound:
    return NotFound(f"no rule {ref!r} stored through the API")


def _pg_time(value: datetime | None) -> datetime | None:
    return None if value is None else codec.as_utc(value)


def _record(row: Any, to_time) -> StoredRule:
    return StoredRule(
        ref=row["ref"],
        definition=json.loads(row["definition"]),
        created_at=to_time(row["created_at"]),
        updated_at=to_time(row["updated_at"]),
    )


# --- SQLite ------------------------------------------------------------------------------


def sqlite_create(
    conn: sqlite3.Connection, ref: str, definition: Mapping[str, Any], now: datetime
) -> StoredRule:
    at = time_to_text(now)
    row = conn.execute(
        "INSERT INTO rules (ref, definition, created_at, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (ref) DO NOTHING RETURNING ref, definition, created_at, updated_at",
        (ref, dumps(definition, "rule definition"), at, at),
    ).fetchone()
    if row is None:
        raise _exists(ref)
    conn.execute(_BUMP)
    return _record(row, time_from_text)


def sqlite_replace(
    conn: sqlite3.Connection, ref: str, definition: Mapping[str, Any], now: datetime
) -> StoredRule:
    row = conn.execute(
        "UPDATE rules SET definition = ?, updated_at = ? WHERE ref = ?"
        " RETURNING ref, definition, created_at, updated_at",
        (dumps(definition, "rule definition"), time_to_text(now), ref),
    ).fetchone()
    if row is None:
        raise _missing(ref)
    conn.execute(_BUMP)
    return _record(row, time_from_text)


def sqlite_delete(conn: sqlite3.Connection, ref: str) -> None:
    if conn.execute("DELETE FROM rules WHERE ref = ?", (ref,)).rowcount == 0:
        raise _missing(ref)
    conn.execute(_BUMP)


def sqlite_list(conn: sqlite3.Connection) -> list[StoredRule]:
    rows = conn.execute(
        "SELECT ref, definition, created_at, updated_at FROM rules ORDER BY ref"
    ).fetchall()
    return [_record(row, time_from_text) for row in rows]


def sqlite_version(conn: sqlite3.Connection) -> int:
    return conn.execute(_VERSION).fetchone()[0]


# --- PostgreSQL --------------------------------------------------------------------------

_PG_COLUMNS = "ref, definition::text AS definition, created_at, updated_at"


async def pg_create(
    conn: asyncpg.Connection, ref: str, definition: Mapping[str, Any], now: datetime
) -> StoredRule:
    row = await conn.fetchrow(
        "INSERT INTO rules (ref, definition, created_at, updated_at)"
        " VALUES ($1, $2::jsonb, $3, $3)"
        f" ON CONFLICT (ref) DO NOTHING RETURNING {_PG_COLUMNS}",
        ref,
        dumps(definition, "rule definition"),
        now,
    )
    if row is None:
        raise _exists(ref)
    await conn.execute(_BUMP)
    return _record(row, _pg_time)


async def pg_replace(
    conn: asyncpg.Connection, ref: str, definition: Mapping[str, Any], now: datetime
) -> StoredRule:
    row = await conn.fetchrow(
        "UPDATE rules SET definition = $2::jsonb, updated_at = $3 WHERE ref = $1"
        f" RETURNING {_PG_COLUMNS}",
        ref,
        dumps(definition, "rule definition"),
        now,
    )
    if row is None:
        raise _missing(ref)
    await conn.execute(_BUMP)
    return _record(row, _pg_time)


async def pg_delete(conn: asyncpg.Connection, ref: str) -> None:
    deleted = await conn.fetchval("DELETE FROM rules WHERE ref = $1 RETURNING ref", ref)
    if deleted is None:
        raise _missing(ref)
    await conn.execute(_BUMP)


async def pg_list(conn: asyncpg.Connection) -> list[StoredRule]:
    rows = await conn.fetch(f"SELECT {_PG_COLUMNS} FROM rules ORDER BY ref")
    return [_record(row, _pg_time) for row in rows]


async def pg_version(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(_VERSION))
