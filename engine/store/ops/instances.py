"""Trigger instances, both dialects: the webhooks' group-committed inserts, claims with a
lease, releases, reads.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from engine.errors import NotFound, StoreError
from engine.model.records import Accepted, NewTriggerInstance, TriggerInstance, utcnow
from engine.model.stream import TRIGGER_INSTANCE_CREATE
from engine.outbound import events as outbound_events
from engine.store import codec
from engine.store.codec import time_to_text
from engine.store.ops import columns, outbox, stream

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg

# --- SQLite (plain functions run on the store's threads, in its transactions) ---


_KEY_CHUNK = 500  # keeps IN (...) lists well under SQLite's variable limit


# One INSERT statement per up to this many rows (7 parameters each, under SQLite's oldest
# limit of 999): one statement step per batch instead of one per row.
_ROWS_PER_INSERT = 128


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _sqlite_insert_sql(rows: int) -> str:
    values = ",".join(["(?, ?, ?, ?, 'pending', ?, ?, ?)"] * rows)
    return (
        "INSERT INTO trigger_instances (id, trigger, payload, occurrence_time, status,"
        f" webhook, dedupe_key, updated_at) VALUES {values}"
    )


def sqlite_insert(
    conn: sqlite3.Connection, batch: Sequence[tuple[NewTriggerInstance, str]], now: datetime
) -> tuple[list[Accepted], int]:
    """Insert a batch (item, payload JSON); returns the answers and the number inserted."""
    first_of = codec.first_occurrences([item for item, _ in batch])
    keys = [
        item.dedupe_key
        for index, (item, _) in enumerate(batch)
        if first_of[index] == index and item.dedupe_key is not None
    ]
    existing: dict[str, str] = {}
    for start in range(0, len(keys), _KEY_CHUNK):
        chunk = keys[start : start + _KEY_CHUNK]
        marks = ",".join("?" * len(chunk))
        existing.update(
            conn.execute(
                f"SELECT dedupe_key, id FROM trigger_instances WHERE dedupe_key IN ({marks})",
                chunk,
            ).fetchall()
        )
    stored: dict[int, Accepted] = {}
    rows = []
    updated_at = time_to_text(now)
    for index, (item, payload) in enumerate(batch):
        if first_of[index] != index:
            continue
        if item.dedupe_key is not None and item.dedupe_key in existing:
            stored[index] = Accepted(existing[item.dedupe_key], duplicate=True)
            continue
        occurred = time_to_text(item.occurrence_time)
        rows.append(
            (item.id, item.trigger, payload, occurred, item.webhook, item.dedupe_key, updated_at)
        )
        stored[index] = Accepted(item.id)
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        conn.execute(_sqlite_insert_sql(len(chunk)), [v for row in chunk for v in row])
    if rows:
        stored_ids = {row[0] for row in rows}
        stream.sqlite_append(
            conn, [(TRIGGER_INSTANCE_CREATE, row[0], None, None) for row in rows], now
        )
        outbox.sqlite_emit(
            conn,
            now,
            lambda: outbound_events.instances_created(batch, stored_ids),
            to_feed=False,
        )
    return codec.answers_for_batch(first_of, stored), len(rows)


def sqlite_claim(
    conn: sqlite3.Connection, limit: int, lease_seconds: float, now: datetime
) -> list[TriggerInstance]:
    expires = time_to_text(now + timedelta(seconds=lease_seconds))
    rows = conn.execute(
        "UPDATE trigger_instances SET status = 'processing', claims = claims + 1,"
        " lease_token = lower(hex(randomblob(16))), lease_expires_at = ?, updated_at = ?"
        " WHERE id IN (SELECT id FROM trigger_instances INDEXED BY trigger_instances_active"
        "  WHERE status IN ('pending', 'processing')"
        "  AND (status = 'pending' OR lease_expires_at < ?) ORDER BY id LIMIT ?)"
        f" RETURNING {columns.SQLITE_INSTANCE_COLUMNS}",
        (expires, time_to_text(now), time_to_text(now), limit),
    ).fetchall()
    return sorted((columns.sqlite_instance(row) for row in rows), key=lambda ti: ti.id)


def sqlite_release(conn: sqlite3.Connection, leases: Mapping[str, str], now: datetime) -> None:
    conn.executemany(
        "UPDATE trigger_instances SET status = 'pending', lease_token = NULL,"
        " lease_expires_at = NULL, updated_at = ?, claims = max(claims - 1, 0)"
        " WHERE id = ? AND lease_token = ? AND status = 'processing'",
        [(time_to_text(now), iid, token) for iid, token in leases.items()],
    )


def sqlite_get(conn: sqlite3.Connection, instance_id: str) -> TriggerInstance:
    row = conn.execute(
        f"SELECT {columns.SQLITE_INSTANCE_COLUMNS} FROM trigger_instances WHERE id = ?",
        (instance_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"trigger instance {instance_id!r} not found")
    return columns.sqlite_instance(row)


def sqlite_count_pending(conn: sqlite3.Connection) -> int:
    return conn.execute(
        "SELECT count(*) FROM trigger_instances WHERE status = 'pending'"
    ).fetchone()[0]


# --- PostgreSQL (coroutines on a pool connection, in a transaction) ---


# The insert of a batch, in key order: concurrent batches with the same dedupe keys wait,
# not deadlock. {guard} is empty, or the condition that keeps it from inserting anything.
_PG_INSERT = (
    "WITH ins AS (INSERT INTO trigger_instances (id, trigger, payload, occurrence_time,"
    " status, webhook, dedupe_key) SELECT i, t, p::json, o, 'pending', w, d"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],"
    " $6::text[]) AS u(i, t, p, o, w, d){guard}"
    " ORDER BY d, i"
    " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id),"
    # The stream's change feed (engine.store.ops.stream), in the same statement.
    " feed AS (INSERT INTO stream_feed (name, object_id)"
    f" SELECT '{TRIGGER_INSTANCE_CREATE}', id FROM ins),"
    # (The stream's readers take the rules workers' hint as theirs: PostgresStore._on_notify.)
    " hint AS (SELECT pg_notify($7, '') FROM (SELECT 1 FROM ins LIMIT 1) AS one)"
)


_PG_SUBSCRIBED = "EXISTS (SELECT 1 FROM subscriptions WHERE enabled)"


# In a transaction: inserts, sends the rules workers' wake-up hint when a row went in,
# and says whether any subscription wants events (which the caller then stores).
_PG_INSERT_IN_TRANSACTION = (
    _PG_INSERT.format(guard="")
    + f" SELECT ins.id, (SELECT count(*) FROM hint) AS hinted, {_PG_SUBSCRIBED} AS subscribed"
    " FROM ins"
)


# On its own (autocommit): the same, unless a subscription is enabled, in which case it
# inserts nothing and answers one row with subscribed = true. Both EXISTS read the one
# snapshot of the statement, so they agree.
_PG_INSERT_ALONE = (
    _PG_INSERT.format(guard=f" WHERE NOT {_PG_SUBSCRIBED}")
    + " SELECT ins.id, (SELECT count(*) FROM hint) AS hinted, false AS subscribed FROM ins"
    f" UNION ALL SELECT NULL, 0, true WHERE {_PG_SUBSCRIBED}"
)


async def pg_insert_alone(
    conn: asyncpg.Connection, batch: Sequence[tuple[NewTriggerInstance, str]]
) -> tuple[list[Accepted], int] | None:
    """Insert a batch in one statement outside any transaction (one round trip instead of
    BEGIN, INSERT and COMMIT), or return None, having written nothing, when the batch has
    to be written in a transaction (insert_trigger_instances):
    - an item has a dedupe key: a duplicate's original is read by a second statement,
      which must not fail after the rows committed (it would queue behind a lock taken in
      between, such as a migration's ALTER TABLE, and the caller be told "not stored");
    - an enabled subscription may want events, which are stored with the rows."""
    if not pg_may_insert_alone(batch):
        return None
    return await _pg_insert_instances(conn, batch, _PG_INSERT_ALONE)


def pg_may_insert_alone(batch: Sequence[tuple[NewTriggerInstance, str]]) -> bool:
    """Whether insert_trigger_instances_alone may write `batch`: none of its items has a
    dedupe key (see there)."""
    return all(item.dedupe_key is None for item, _ in batch)


async def pg_insert(
    conn: asyncpg.Connection, batch: Sequence[tuple[NewTriggerInstance, str]]
) -> tuple[list[Accepted], int]:
    """Insert a batch and store the events subscriptions want (the caller's transaction)."""
    result = await _pg_insert_instances(conn, batch, _PG_INSERT_IN_TRANSACTION)
    assert result is not None  # only the statement outside a transaction holds back
    return result


async def _pg_insert_instances(
    conn: asyncpg.Connection, batch: Sequence[tuple[NewTriggerInstance, str]], statement: str
) -> tuple[list[Accepted], int] | None:
    first_of = codec.first_occurrences([item for item, _ in batch])
    unique = [
        (index, item, payload)
        for index, (item, payload) in enumerate(batch)
        if first_of[index] == index
    ]
    rows = await conn.fetch(
        statement,
        [item.id for _, item, _ in unique],
        [item.trigger for _, item, _ in unique],
        [payload for _, _, payload in unique],
        [codec.as_utc(item.occurrence_time) for _, item, _ in unique],
        [item.webhook for _, item, _ in unique],
        [item.dedupe_key for _, item, _ in unique],
        columns.channel("trigger_instances"),
    )
    if rows and rows[0]["id"] is None:
        return None  # held back: a subscription is enabled (see _INSERT_ALONE)
    inserted = {row["id"] for row in rows}
    # Rows skipped by ON CONFLICT: answer with the id of the row that holds the key. The
    # conflicting transaction has committed by now (ON CONFLICT waited for it), and this
    # statement's fresh snapshot sees it.
    conflicting = [item.dedupe_key for _, item, _ in unique if item.id not in inserted]
    originals: dict[str, str] = {}
    if conflicting:
        originals = {
            row["dedupe_key"]: row["id"]
            for row in await conn.fetch(
                "SELECT dedupe_key, id FROM trigger_instances WHERE dedupe_key = ANY($1::text[])",
                conflicting,
            )
        }
    stored: dict[int, Accepted] = {}
    for index, item, _ in unique:
        if item.id in inserted:
            stored[index] = Accepted(item.id)
        elif item.dedupe_key in originals:
            stored[index] = Accepted(originals[item.dedupe_key], duplicate=True)
        else:
            # Only a deleted row could do this, and nothing deletes trigger instances.
            raise StoreError(f"trigger instance {item.id}: neither stored nor a duplicate")
    if rows and rows[0]["subscribed"]:
        await outbox.pg_emit(
            conn,
            utcnow(),
            lambda: outbound_events.instances_created(batch, inserted),
            to_feed=False,
        )
    return codec.answers_for_batch(first_of, stored), len(inserted)


async def pg_claim(
    conn: asyncpg.Connection, limit: int, lease_seconds: float, now: datetime
) -> list[TriggerInstance]:
    # `now` is unused: leases follow the database's clock, shared by every process.
    rows = await conn.fetch(
        f"UPDATE trigger_instances SET status = 'processing', lease_token = {columns.PG_NEW_TOKEN},"
        " lease_expires_at = now() + make_interval(secs => $2), updated_at = now(),"
        " claims = claims + 1"
        " WHERE id IN (SELECT id FROM trigger_instances"
        "  WHERE status IN ('pending', 'processing')"
        "  AND (status = 'pending' OR lease_expires_at < now())"
        "  ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)"
        f" RETURNING {columns.PG_INSTANCE_COLUMNS}",
        limit,
        float(lease_seconds),
    )
    return sorted((columns.pg_instance(row) for row in rows), key=lambda ti: ti.id)


async def pg_release(conn: asyncpg.Connection, leases: Mapping[str, str], now: datetime) -> None:
    # `now` is unused: leases follow the database's clock, shared by every process.
    await conn.execute(
        "UPDATE trigger_instances t SET status = 'pending', lease_token = NULL,"
        " lease_expires_at = NULL, updated_at = now(), claims = greatest(t.claims - 1, 0)"
        " FROM unnest($1::text[], $2::text[]) AS r(id, token)"
        " WHERE t.id = r.id AND t.lease_token = r.token AND t.status = 'processing'",
        list(leases),
        list(leases.values()),
    )
    await columns.pg_notify(conn, "trigger_instances")


async def pg_get(conn: asyncpg.Connection, instance_id: str) -> TriggerInstance:
    row = await conn.fetchrow(
        f"SELECT {columns.PG_INSTANCE_COLUMNS} FROM trigger_instances WHERE id = $1", instance_id
    )
    if row is None:
        raise NotFound(f"trigger instance {instance_id!r} not found")
    return columns.pg_instance(row)


async def pg_count_pending(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT count(*) FROM trigger_instances WHERE status = 'pending'")
