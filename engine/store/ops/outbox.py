"""The event outbox, both dialects: `emit` runs inside the transaction of the state change
that causes the events, so an event is stored if and only if that change commits. With no
enabled subscription it costs one indexed read of an empty table and builds nothing.

Sequence numbers come from an UPDATE of the subscription row, whose lock is held until
commit, so a subscription's numbers grow in commit order (subscriptions are locked in id
order, so two writers cannot deadlock on them).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from engine.outbound.events import NewEvent
from engine.store import outbound_rows as rows
from engine.store.codec import as_utc, dumps, time_to_text
from engine.store.ops import stream

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg

EventSource = Callable[[], Sequence[NewEvent]]


# --- SQLite (plain functions run on the store's threads, in its transactions) ---


def sqlite_emit(
    conn: sqlite3.Connection, now: datetime, source: EventSource, *, to_feed: bool = True
) -> int:
    """Store the events `source` builds and their deliveries; returns deliveries made.
    With `to_feed`, execution events also go to the stream's change feed."""
    if to_feed:
        built = list(source())
        stream.sqlite_append(conn, stream.feed_rows_for(built), now)
        source = lambda: built  # noqa: E731 - built once for both
    subscribed = conn.execute("SELECT id, events FROM subscriptions WHERE enabled = 1").fetchall()
    if not subscribed:
        return 0
    new_events = list(source())
    wanted = rows.fan_out([(r["id"], r["events"]) for r in subscribed], new_events)
    return _sqlite_store_deliveries(conn, now, wanted)


def _sqlite_store_deliveries(
    conn: sqlite3.Connection, now: datetime, wanted: Mapping[str, Sequence[NewEvent]]
) -> int:
    if not wanted:
        return 0
    at = time_to_text(now)
    stored_events: dict[str, NewEvent] = {}
    new_rows = []
    # In id order, as PostgreSQL does, so concurrent writers lock subscriptions alike.
    for subscription_id in sorted(wanted):
        matching = wanted[subscription_id]
        first = conn.execute(
            "UPDATE subscriptions SET next_sequence = next_sequence + ? WHERE id = ?"
            " RETURNING next_sequence - ?",
            (len(matching), subscription_id, len(matching)),
        ).fetchone()[0]
        for new in rows.number(first, subscription_id, matching):
            stored_events[new.event.id] = new.event
            new_rows.append(
                (new.id, subscription_id, new.event.id, new.event.type, new.sequence, at, at)
            )
    conn.executemany(
        "INSERT INTO events (id, type, ts, data) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        [(e.id, e.type, time_to_text(e.ts), dumps(e.data, e.type)) for e in stored_events.values()],
    )
    conn.executemany(
        "INSERT INTO deliveries (id, subscription_id, event_id, event_type, sequence, status,"
        " attempts, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
        new_rows,
    )
    return len(new_rows)


# --- PostgreSQL (coroutines on a pool connection, in a transaction) ---


async def pg_emit(
    conn: asyncpg.Connection, now: datetime, source: EventSource, *, to_feed: bool = True
) -> int:
    """Store the events `source` builds and their deliveries; returns deliveries made.
    With `to_feed`, execution events also go to the stream's change feed."""
    if to_feed:
        built = list(source())
        await stream.pg_append(conn, stream.feed_rows_for(built))
        source = lambda: built  # noqa: E731 - built once for both
    subscribed = await conn.fetch("SELECT id, events FROM subscriptions WHERE enabled")
    if not subscribed:
        return 0
    wanted = rows.fan_out([(r["id"], r["events"]) for r in subscribed], list(source()))
    return await _pg_store_deliveries(conn, now, wanted)


async def _pg_store_deliveries(
    conn: asyncpg.Connection, now: datetime, wanted: Mapping[str, Sequence[NewEvent]]
) -> int:
    if not wanted:
        return 0
    stored_events: dict[str, NewEvent] = {}
    new_rows = []
    for subscription_id in sorted(wanted):
        matching = wanted[subscription_id]
        first = await conn.fetchval(
            "UPDATE subscriptions SET next_sequence = next_sequence + $2 WHERE id = $1"
            " RETURNING next_sequence - $2",
            subscription_id,
            len(matching),
        )
        if first is None:
            continue  # deleted since it was read
        for new in rows.number(first, subscription_id, matching):
            stored_events[new.event.id] = new.event
            new_rows.append((new.id, subscription_id, new.event.id, new.event.type, new.sequence))
    await conn.executemany(
        "INSERT INTO events (id, type, ts, data) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (id) DO NOTHING",
        [(e.id, e.type, as_utc(e.ts), dumps(e.data, e.type)) for e in stored_events.values()],
    )
    await conn.executemany(
        "INSERT INTO deliveries (id, subscription_id, event_id, event_type, sequence, status,"
        " attempts, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, 'pending', 0,"
        " $6, $6)",
        [(*row, now) for row in new_rows],
    )
    if new_rows:
        await conn.execute("SELECT pg_notify('hookyard_deliveries', '')")
    return len(new_rows)
