"""The change feed behind the event stream, and the live output of actions, both dialects.

Feed entries are written in the transaction of the change they report: by the outbox
(`append_events`, execution created or updated), by the ingest insert (trigger instances:
see engine.store.ops.instances) and with each piece of output. Readers take entries after
the last `seq` they saw and join the executions and trigger instances they reference.

On PostgreSQL `seq` is taken at insert and transactions commit in any order, so entry 8
may become visible before entry 7. `read_feed` returns what is visible; its reader
(engine.http.stream_hub) stops at a missing number, waits a moment for it to commit, and
then reads past it (a rolled-back transaction leaves a gap for ever).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engine.model.records import Execution, TriggerInstance
from engine.model.stream import (
    EXECUTION_CREATE,
    EXECUTION_OUTPUT_CREATE,
    EXECUTION_UPDATE,
    TRIGGER_INSTANCE_CREATE,
    FeedEntry,
    OutputChunk,
)
from engine.outbound import events as outbound_events
from engine.outbound.events import NewEvent
from engine.store.codec import as_utc, dumps, loads, time_from_text, time_to_text
from engine.store.ops import columns

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg

# (name, object id, status, data JSON or None)
FeedRow = tuple[str, str, str | None, str | None]

_FEED_COLUMNS = "seq, name, object_id, status, data, created_at"
_PG_FEED_COLUMNS = "seq, name, object_id, status, data::text AS data, created_at"
# The ids joined per read are bounded by the read's limit; SQLite takes at most 999
# parameters in older builds, so its IN lists are chunked.
_SQLITE_IN_CHUNK = 500


def feed_rows_for(events: Iterable[NewEvent]) -> list[FeedRow]:
    """The feed entries for the outbox events of one transaction (executions only: the
    ingest writes trigger instances' entries itself)."""
    found: list[FeedRow] = []
    for event in events:
        if event.type == outbound_events.EXECUTION_CREATED:
            found.append((EXECUTION_CREATE, event.data["id"], event.data["status"], None))
        elif event.type == outbound_events.EXECUTION_UPDATED:
            found.append((EXECUTION_UPDATE, event.data["id"], event.data["status"], None))
    return found


def _output_data(
    output_id: int, execution_id: str, action_ref: str, runner_ref: str, chunk: OutputChunk
) -> str:
    # st2's ActionExecutionOutputAPI fields (st2 execution tail reads execution_id, data,
    # output_type and timestamp).
    return dumps(
        {
            "id": str(output_id),
            "execution_id": execution_id,
            "action_ref": action_ref,
            "runner_ref": runner_ref,
            "output_type": chunk.output_type,
            "data": chunk.data,
            "timestamp": time_to_text(chunk.timestamp),
        },
        "execution output",
    )


# --- SQLite (plain functions run on the store's threads, in its transactions) ---


def sqlite_append(conn: sqlite3.Connection, rows: Sequence[FeedRow], now: datetime) -> None:
    if rows:
        at = time_to_text(now)
        conn.executemany(
            "INSERT INTO stream_feed (name, object_id, status, data, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [(*row, at) for row in rows],
        )


def sqlite_append_output(
    conn: sqlite3.Connection,
    execution_id: str,
    action_ref: str,
    runner_ref: str,
    chunks: Sequence[OutputChunk],
    now: datetime,
) -> None:
    feed: list[FeedRow] = []
    for chunk in chunks:
        output_id = conn.execute(
            "INSERT INTO execution_output (execution_id, output_type, data, timestamp)"
            " VALUES (?, ?, ?, ?) RETURNING id",
            (execution_id, chunk.output_type, chunk.data, time_to_text(chunk.timestamp)),
        ).fetchone()[0]
        data = _output_data(output_id, execution_id, action_ref, runner_ref, chunk)
        feed.append((EXECUTION_OUTPUT_CREATE, execution_id, None, data))
    sqlite_append(conn, feed, now)


def sqlite_list_output(
    conn: sqlite3.Connection, execution_id: str, output_type: str | None
) -> list[OutputChunk]:
    query = "SELECT id, output_type, data, timestamp FROM execution_output WHERE execution_id = ?"
    args: list[Any] = [execution_id]
    if output_type is not None:
        query += " AND output_type = ?"
        args.append(output_type)
    rows = conn.execute(query + " ORDER BY id", args).fetchall()
    return [
        OutputChunk(r["output_type"], r["data"], time_from_text(r["timestamp"]), r["id"])  # type: ignore[arg-type]
        for r in rows
    ]


def sqlite_read_feed(conn: sqlite3.Connection, after: int, limit: int) -> list[FeedEntry]:
    rows = conn.execute(
        f"SELECT {_FEED_COLUMNS} FROM stream_feed WHERE seq > ? ORDER BY seq LIMIT ?",
        (after, limit),
    ).fetchall()
    execution_ids = sorted({r["object_id"] for r in rows if r["name"] != TRIGGER_INSTANCE_CREATE})
    instance_ids = sorted({r["object_id"] for r in rows if r["name"] == TRIGGER_INSTANCE_CREATE})
    executions: dict[str, Execution] = {}
    instances: dict[str, TriggerInstance] = {}
    for start in range(0, len(execution_ids), _SQLITE_IN_CHUNK):
        chunk = execution_ids[start : start + _SQLITE_IN_CHUNK]
        for row in conn.execute(
            f"SELECT {columns.SQLITE_EXECUTION_COLUMNS} FROM executions"
            f" WHERE id IN ({','.join('?' * len(chunk))})",
            chunk,
        ):
            executions[row["id"]] = columns.sqlite_execution(row)
    for start in range(0, len(instance_ids), _SQLITE_IN_CHUNK):
        chunk = instance_ids[start : start + _SQLITE_IN_CHUNK]
        for row in conn.execute(
            f"SELECT {columns.SQLITE_INSTANCE_COLUMNS} FROM trigger_instances"
            f" WHERE id IN ({','.join('?' * len(chunk))})",
            chunk,
        ):
            instances[row["id"]] = columns.sqlite_instance(row)
    return [_entry(row, time_from_text, executions, instances) for row in rows]


def sqlite_feed_head(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT coalesce(max(seq), 0) FROM stream_feed").fetchone()[0]


def sqlite_trim_feed(conn: sqlite3.Connection, keep: int) -> int:
    return conn.execute(
        "DELETE FROM stream_feed WHERE seq <= (SELECT max(seq) FROM stream_feed) - ?", (keep,)
    ).rowcount


# --- PostgreSQL (coroutines on a pool connection, in a transaction) ---


async def pg_append(conn: asyncpg.Connection, rows: Sequence[FeedRow]) -> None:
    if rows:
        # One round trip: the rows and the readers' wake-up hint (sent at commit).
        await conn.execute(
            "WITH ins AS (INSERT INTO stream_feed (name, object_id, status, data)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::json[])"
            " RETURNING 1)"
            " SELECT pg_notify($5, '') FROM (SELECT 1 FROM ins LIMIT 1) AS one",
            [row[0] for row in rows],
            [row[1] for row in rows],
            [row[2] for row in rows],
            [row[3] for row in rows],
            columns.channel("stream"),
        )


async def pg_append_output(
    conn: asyncpg.Connection,
    execution_id: str,
    action_ref: str,
    runner_ref: str,
    chunks: Sequence[OutputChunk],
    now: datetime,
) -> None:
    ids = await conn.fetch(
        "INSERT INTO execution_output (execution_id, output_type, data, timestamp)"
        " SELECT $1, t, d, ts FROM unnest($2::text[], $3::text[], $4::timestamptz[])"
        " WITH ORDINALITY AS u(t, d, ts, n) ORDER BY n RETURNING id",
        execution_id,
        [chunk.output_type for chunk in chunks],
        [chunk.data for chunk in chunks],
        [as_utc(chunk.timestamp) for chunk in chunks],
    )
    # RETURNING follows the insert order, which follows ORDER BY n.
    await pg_append(
        conn,
        [
            (
                EXECUTION_OUTPUT_CREATE,
                execution_id,
                None,
                _output_data(row["id"], execution_id, action_ref, runner_ref, chunk),
            )
            for row, chunk in zip(ids, chunks, strict=True)
        ],
    )


async def pg_list_output(
    conn: asyncpg.Connection, execution_id: str, output_type: str | None
) -> list[OutputChunk]:
    rows = await conn.fetch(
        "SELECT id, output_type, data, timestamp FROM execution_output WHERE execution_id = $1"
        " AND ($2::text IS NULL OR output_type = $2) ORDER BY id",
        execution_id,
        output_type,
    )
    return [OutputChunk(r["output_type"], r["data"], as_utc(r["timestamp"]), r["id"]) for r in rows]


async def pg_read_feed(conn: asyncpg.Connection, after: int, limit: int) -> list[FeedEntry]:
    rows = await conn.fetch(
        f"SELECT {_PG_FEED_COLUMNS} FROM stream_feed WHERE seq > $1 ORDER BY seq LIMIT $2",
        after,
        limit,
    )
    execution_ids = list({r["object_id"] for r in rows if r["name"] != TRIGGER_INSTANCE_CREATE})
    instance_ids = list({r["object_id"] for r in rows if r["name"] == TRIGGER_INSTANCE_CREATE})
    executions: dict[str, Execution] = {}
    instances: dict[str, TriggerInstance] = {}
    if execution_ids:
        for row in await conn.fetch(
            f"SELECT {columns.PG_EXECUTION_COLUMNS} FROM executions WHERE id = ANY($1::text[])",
            execution_ids,
        ):
            executions[row["id"]] = columns.pg_execution(row)
    if instance_ids:
        for row in await conn.fetch(
            f"SELECT {columns.PG_INSTANCE_COLUMNS} FROM trigger_instances"
            " WHERE id = ANY($1::text[])",
            instance_ids,
        ):
            instances[row["id"]] = columns.pg_instance(row)
    return [_entry(row, columns.pg_time, executions, instances) for row in rows]


async def pg_feed_head(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT coalesce(max(seq), 0) FROM stream_feed")


async def pg_trim_feed(conn: asyncpg.Connection, keep: int) -> int:
    status = await conn.execute(
        "DELETE FROM stream_feed WHERE seq <= (SELECT max(seq) FROM stream_feed) - $1", keep
    )
    return int(status.split()[-1])


# --- both ---


def _entry(
    row: Any,
    to_time: Any,
    executions: dict[str, Execution],
    instances: dict[str, TriggerInstance],
) -> FeedEntry:
    is_instance = row["name"] == TRIGGER_INSTANCE_CREATE
    return FeedEntry(
        seq=row["seq"],
        name=row["name"],
        object_id=row["object_id"],
        created_at=to_time(row["created_at"]),
        status=row["status"],
        data=loads(row["data"]),
        execution=None if is_instance else executions.get(row["object_id"]),
        instance=instances.get(row["object_id"]) if is_instance else None,
    )
