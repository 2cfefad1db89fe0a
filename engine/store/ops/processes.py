"""The OS process an execution's attempt runs in, for both stores.

A worker records it when the action's process starts (fenced by its lease token); a worker
that re-claims the execution after a crash, or starts up on the same host, reads it back to
kill what the dead worker left running (engine.workers.leftovers). Only executions that
have not finished, or were abandoned (their worker died at the last attempt), are listed:
a worker that finished its execution saw its process end.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from engine.store.codec import dumps, loads
from engine.store.ops import columns

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg

_UNFINISHED = "('scheduled', 'running', 'canceling')"
_LEFT_BEHIND = "('scheduled', 'running', 'canceling', 'abandoned')"


def _record(process: Mapping[str, Any]) -> str:
    return dumps(dict(process), "execution process")


def _rows_to_map(rows: Sequence[Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        value = loads(row["process"])
        if isinstance(value, dict):
            found[row["id"]] = value
    return found


# --- SQLite ------------------------------------------------------------------------------


def sqlite_record(
    conn: sqlite3.Connection, execution_id: str, lease_token: str, process: Mapping[str, Any]
) -> None:
    row = conn.execute(
        f"UPDATE executions SET process = ? WHERE id = ? AND lease_token = ?"
        f" AND status IN {_UNFINISHED} RETURNING id",
        (_record(process), execution_id, lease_token),
    ).fetchone()
    if row is None:
        raise columns.sqlite_missing_or_lost(conn, "executions", "execution", execution_id)


def sqlite_list(
    conn: sqlite3.Connection, execution_ids: Sequence[str] | None
) -> dict[str, dict[str, Any]]:
    query = f"SELECT id, process FROM executions WHERE status IN {_LEFT_BEHIND}"
    if execution_ids is None:
        return _rows_to_map(conn.execute(query + " AND process IS NOT NULL").fetchall())
    found: dict[str, dict[str, Any]] = {}
    ids = list(execution_ids)
    for start in range(0, len(ids), 500):  # well under SQLite's variable limit
        chunk = ids[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        found.update(
            _rows_to_map(
                conn.execute(
                    query + f" AND process IS NOT NULL AND id IN ({marks})", chunk
                ).fetchall()
            )
        )
    return found


# --- PostgreSQL --------------------------------------------------------------------------


async def pg_record(
    conn: asyncpg.Connection, execution_id: str, lease_token: str, process: Mapping[str, Any]
) -> None:
    found = await conn.fetchval(
        f"UPDATE executions SET process = $3::json WHERE id = $1 AND lease_token = $2"
        f" AND status IN {_UNFINISHED} RETURNING id",
        execution_id,
        lease_token,
        _record(process),
    )
    if found is None:
        raise await columns.pg_missing_or_lost(conn, "executions", "execution", execution_id)


async def pg_list(
    conn: asyncpg.Connection, execution_ids: Sequence[str] | None
) -> dict[str, dict[str, Any]]:
    query = (
        f"SELECT id, process::text AS process FROM executions WHERE status IN {_LEFT_BEHIND}"
        " AND process IS NOT NULL"
    )
    if execution_ids is None:
        return _rows_to_map(await conn.fetch(query))
    return _rows_to_map(await conn.fetch(query + " AND id = ANY($1::text[])", list(execution_ids)))
