"""Outbound deliveries, both dialects: a queue claimed with a lease (PostgreSQL locks
candidates with `FOR UPDATE SKIP LOCKED` and uses the database clock), one attempt
recorded at a time (the outcome is decided by engine.outbound.attempts), redeliveries.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from engine.errors import LeaseLost, NotFound
from engine.model.records import Page
from engine.outbound import breaker
from engine.outbound.attempts import attempt_outcome
from engine.outbound.breaker import Breaker
from engine.outbound.delivery import DELIVERING, PENDING, AttemptResult, ClaimedDelivery, Delivery
from engine.outbound.events import NewEvent
from engine.store import outbound_rows as rows
from engine.store.codec import Condition, as_utc, dumps, time_from_text, time_to_text
from engine.store.ops import columns, outbox, subscriptions
from engine.store.paging import postgres_page, sqlite_page

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg

# --- SQLite (plain functions run on the store's threads, in its transactions) ---


def sqlite_claim(
    conn: sqlite3.Connection,
    limit: int,
    lease_seconds: float,
    per_subscription: int,
    busy: Mapping[str, int],
    now: datetime,
) -> list[ClaimedDelivery]:
    at = time_to_text(now)
    # A subscription whose circuit is open is skipped; a half-open one gets one probe.
    candidates = conn.execute(
        "SELECT d.id, d.subscription_id, s.circuit_open_until IS NOT NULL AS half_open"
        " FROM deliveries d INDEXED BY deliveries_due"
        " JOIN subscriptions s ON s.id = d.subscription_id AND s.enabled = 1"
        " AND (s.circuit_open_until IS NULL OR s.circuit_open_until <= ?)"
        " WHERE d.status IN ('pending', 'delivering') AND d.next_attempt_at <= ?"
        " ORDER BY d.next_attempt_at, d.id LIMIT ?",
        (at, at, rows.CLAIM_WINDOW),
    ).fetchall()
    chosen, probes = breaker.choose(
        [breaker.Candidate(r[0], r[1], bool(r[2])) for r in candidates],
        limit,
        per_subscription,
        busy,
    )
    if not chosen:
        return []
    lease_end = time_to_text(now + timedelta(seconds=lease_seconds))
    if probes:
        # Open again until the probe's lease ends: its outcome decides what comes next.
        conn.executemany(
            "UPDATE subscriptions SET circuit_open_until = ? WHERE id = ?",
            [(lease_end, subscription_id) for subscription_id in sorted(probes)],
        )
    marks = ",".join("?" * len(chosen))
    conn.execute(
        "UPDATE deliveries SET status = ?, lease_token = lower(hex(randomblob(16))),"
        f" next_attempt_at = ? WHERE id IN ({marks})",
        [DELIVERING, lease_end, *chosen],
    )
    return _sqlite_claimed(conn, chosen)


def _sqlite_claimed(conn: sqlite3.Connection, ids: Sequence[str]) -> list[ClaimedDelivery]:
    marks = ",".join("?" * len(ids))
    found = conn.execute(
        f"SELECT {', '.join('d.' + c for c in rows.DELIVERY_FIELDS)},"
        f" e.ts AS event_ts, e.data AS event_data, {columns.PREFIXED_SUBSCRIPTION}"
        " FROM deliveries d JOIN events e ON e.id = d.event_id"
        f" JOIN subscriptions s ON s.id = d.subscription_id WHERE d.id IN ({marks})"
        " ORDER BY d.next_attempt_at, d.id",
        list(ids),
    ).fetchall()
    return [
        ClaimedDelivery(
            delivery=columns.sqlite_delivery(row),
            subscription=columns.sqlite_subscription(row, "s_"),
            event_ts=time_from_text(row["event_ts"]),  # type: ignore[arg-type]
            event_data=row["event_data"],
        )
        for row in found
    ]


def sqlite_complete(
    conn: sqlite3.Connection,
    delivery_id: str,
    lease_token: str,
    result: AttemptResult,
    retry_at: datetime | None,
    auto_disable_after: float,
    breaker: Breaker | None = None,
) -> Delivery:
    row = conn.execute(
        f"SELECT {columns.DELIVERY_COLUMNS} FROM deliveries"
        " WHERE id = ? AND lease_token = ? AND status = ?",
        (delivery_id, lease_token, DELIVERING),
    ).fetchone()
    if row is None:
        raise _sqlite_missing_or_lost(conn, delivery_id)
    delivery = columns.sqlite_delivery(row)
    subscription = subscriptions.sqlite_get(conn, delivery.subscription_id)
    outcome = attempt_outcome(delivery, subscription, result, retry_at, auto_disable_after, breaker)
    conn.execute(
        "UPDATE deliveries SET status = ?, attempts = ?, next_attempt_at = ?,"
        " last_status_code = ?, last_error = ?, last_response_ms = ?,"
        " last_response_excerpt = ?, lease_token = NULL,"
        " attempt_log = json_insert(attempt_log, '$[#]', json(?)) WHERE id = ?",
        (
            outcome.status,
            outcome.attempts,
            time_to_text(outcome.next_attempt_at),
            result.status_code,
            result.error,
            result.response_ms,
            result.response_excerpt,
            dumps(outcome.attempt_record),
            delivery_id,
        ),
    )
    if outcome.subscription_changes:
        subscriptions.sqlite_update(conn, delivery.subscription_id, outcome.subscription_changes)
    if outcome.exhausted_event is not None:
        exhausted = outcome.exhausted_event
        outbox.sqlite_emit(conn, result.at, lambda: [exhausted])
    return sqlite_get(conn, delivery_id)


def sqlite_release(conn: sqlite3.Connection, leases: Mapping[str, str], now: datetime) -> None:
    conn.executemany(
        "UPDATE deliveries SET status = ?, lease_token = NULL, next_attempt_at = ?"
        " WHERE id = ? AND lease_token = ? AND status = ?",
        [(PENDING, time_to_text(now), did, token, DELIVERING) for did, token in leases.items()],
    )


def _sqlite_missing_or_lost(conn: sqlite3.Connection, delivery_id: str) -> Exception:
    if conn.execute("SELECT 1 FROM deliveries WHERE id = ?", (delivery_id,)).fetchone() is None:
        return NotFound(f"delivery {delivery_id!r} not found")
    return LeaseLost(f"delivery {delivery_id!r}: the lease token is no longer current")


def sqlite_get(conn: sqlite3.Connection, delivery_id: str) -> Delivery:
    row = conn.execute(
        f"SELECT {columns.DELIVERY_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"delivery {delivery_id!r} not found")
    return columns.sqlite_delivery(row)


def sqlite_list(
    conn: sqlite3.Connection, conditions: Sequence[Condition], limit: int, offset: int
) -> Page:
    return sqlite_page(
        conn,
        "deliveries",
        columns.DELIVERY_COLUMNS,
        "created_at DESC, sequence DESC",
        columns.sqlite_delivery,
        conditions,
        limit,
        offset,
    )


def sqlite_redeliver(conn: sqlite3.Connection, delivery_id: str, now: datetime) -> Delivery:
    """A new pending delivery of the same event to the same subscription, next in sequence."""
    old = sqlite_get(conn, delivery_id)
    subscriptions.sqlite_get(conn, old.subscription_id)  # NotFound if it was deleted
    event = conn.execute("SELECT id, type FROM events WHERE id = ?", (old.event_id,)).fetchone()
    sequence = conn.execute(
        "UPDATE subscriptions SET next_sequence = next_sequence + 1 WHERE id = ?"
        " RETURNING next_sequence - 1",
        (old.subscription_id,),
    ).fetchone()[0]
    new = rows.number(sequence, old.subscription_id, [NewEvent(event["type"], {}, event["id"])])[0]
    at = time_to_text(now)
    conn.execute(
        "INSERT INTO deliveries (id, subscription_id, event_id, event_type, sequence, status,"
        " attempts, created_at, next_attempt_at, redelivery_of)"
        " VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
        (new.id, old.subscription_id, old.event_id, old.event_type, sequence, at, at, old.id),
    )
    conn.execute("UPDATE deliveries SET redelivered_as = ? WHERE id = ?", (new.id, old.id))
    return sqlite_get(conn, new.id)


def sqlite_recover(
    conn: sqlite3.Connection, subscription_id: str, since: datetime, now: datetime
) -> list[Delivery]:
    subscriptions.sqlite_get(conn, subscription_id)
    failed = conn.execute(
        "SELECT id FROM deliveries WHERE subscription_id = ? AND status = 'failed'"
        " AND redelivered_as IS NULL AND created_at >= ? ORDER BY created_at, sequence",
        (subscription_id, time_to_text(since)),
    ).fetchall()
    return [sqlite_redeliver(conn, row["id"], now) for row in failed]


# --- PostgreSQL (coroutines on a pool connection, in a transaction) ---


async def pg_claim(
    conn: asyncpg.Connection,
    limit: int,
    lease_seconds: float,
    per_subscription: int,
    busy: Mapping[str, int],
    now: datetime,
) -> list[ClaimedDelivery]:
    # `now` is unused: leases follow the database's clock, shared by every process.
    candidates = await conn.fetch(
        "SELECT d.id, d.subscription_id, s.circuit_open_until IS NOT NULL AS half_open"
        " FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id AND s.enabled"
        " AND (s.circuit_open_until IS NULL OR s.circuit_open_until <= now())"
        " WHERE d.status IN ('pending', 'delivering') AND d.next_attempt_at <= now()"
        " ORDER BY d.next_attempt_at, d.id LIMIT $1 FOR UPDATE OF d SKIP LOCKED",
        rows.CLAIM_WINDOW,
    )
    chosen, probes = breaker.choose(
        [breaker.Candidate(r[0], r[1], r[2]) for r in candidates], limit, per_subscription, busy
    )
    if probes:
        # One probe across processes: only the claim that moves a half-open circuit's
        # time forward keeps its probe.
        won = {
            r["id"]
            for r in await conn.fetch(
                "UPDATE subscriptions SET circuit_open_until = now() + make_interval(secs => $1)"
                " WHERE id = ANY($2::text[]) AND circuit_open_until <= now() RETURNING id",
                float(lease_seconds),
                sorted(probes),
            )
        }
        lost = probes - won
        if lost:
            half_open = {r[0] for r in candidates if r[2] and r[1] in lost}
            chosen = [d for d in chosen if d not in half_open]
    if not chosen:
        return []
    await conn.execute(
        f"UPDATE deliveries SET status = $1, lease_token = {columns.PG_NEW_TOKEN},"
        " next_attempt_at = now() + make_interval(secs => $2) WHERE id = ANY($3::text[])",
        DELIVERING,
        float(lease_seconds),
        chosen,
    )
    found = await conn.fetch(
        f"SELECT {', '.join('d.' + c for c in rows.DELIVERY_FIELDS)},"
        f" e.ts AS event_ts, e.data AS event_data, {columns.PREFIXED_SUBSCRIPTION}"
        " FROM deliveries d JOIN events e ON e.id = d.event_id"
        " JOIN subscriptions s ON s.id = d.subscription_id WHERE d.id = ANY($1::text[])"
        " ORDER BY d.next_attempt_at, d.id",
        chosen,
    )
    return [
        ClaimedDelivery(
            delivery=columns.pg_delivery(row),
            subscription=columns.pg_subscription(row, "s_"),
            event_ts=as_utc(row["event_ts"]),
            event_data=row["event_data"],
        )
        for row in found
    ]


async def pg_complete(
    conn: asyncpg.Connection,
    delivery_id: str,
    lease_token: str,
    result: AttemptResult,
    retry_at: datetime | None,
    auto_disable_after: float,
    breaker: Breaker | None = None,
) -> Delivery:
    row = await conn.fetchrow(
        f"SELECT {columns.DELIVERY_COLUMNS} FROM deliveries"
        " WHERE id = $1 AND lease_token = $2 AND status = $3 FOR UPDATE",
        delivery_id,
        lease_token,
        DELIVERING,
    )
    if row is None:
        raise await _pg_missing_or_lost(conn, delivery_id)
    delivery = columns.pg_delivery(row)
    subscription = await subscriptions.pg_get(conn, delivery.subscription_id)
    outcome = attempt_outcome(delivery, subscription, result, retry_at, auto_disable_after, breaker)
    await conn.execute(
        "UPDATE deliveries SET status = $2, attempts = $3, next_attempt_at = $4,"
        " last_status_code = $5, last_error = $6, last_response_ms = $7,"
        " last_response_excerpt = $8, lease_token = NULL,"
        " attempt_log = (attempt_log::jsonb || jsonb_build_array($9::jsonb))::text"
        " WHERE id = $1",
        delivery_id,
        outcome.status,
        outcome.attempts,
        columns.pg_time(outcome.next_attempt_at),
        result.status_code,
        result.error,
        result.response_ms,
        result.response_excerpt,
        dumps(outcome.attempt_record),
    )
    if outcome.subscription_changes:
        await subscriptions.pg_update(conn, delivery.subscription_id, outcome.subscription_changes)
    if outcome.exhausted_event is not None:
        exhausted = outcome.exhausted_event
        await outbox.pg_emit(conn, result.at, lambda: [exhausted])
    return await pg_get(conn, delivery_id)


async def pg_release(conn: asyncpg.Connection, leases: Mapping[str, str], now: datetime) -> None:
    # `now` is unused: leases follow the database's clock, shared by every process.
    await conn.execute(
        "UPDATE deliveries d SET status = $1, lease_token = NULL, next_attempt_at = now()"
        " FROM unnest($2::text[], $3::text[]) AS r(id, token)"
        " WHERE d.id = r.id AND d.lease_token = r.token AND d.status = $4",
        PENDING,
        list(leases),
        list(leases.values()),
        DELIVERING,
    )


async def _pg_missing_or_lost(conn: asyncpg.Connection, delivery_id: str) -> Exception:
    if await conn.fetchval("SELECT 1 FROM deliveries WHERE id = $1", delivery_id) is None:
        return NotFound(f"delivery {delivery_id!r} not found")
    return LeaseLost(f"delivery {delivery_id!r}: the lease token is no longer current")


async def pg_get(conn: asyncpg.Connection, delivery_id: str) -> Delivery:
    row = await conn.fetchrow(
        f"SELECT {columns.DELIVERY_COLUMNS} FROM deliveries WHERE id = $1", delivery_id
    )
    if row is None:
        raise NotFound(f"delivery {delivery_id!r} not found")
    return columns.pg_delivery(row)


async def pg_list(
    conn: asyncpg.Connection, conditions: Sequence[Condition], limit: int, offset: int
) -> Page:
    return await postgres_page(
        conn,
        "deliveries",
        columns.DELIVERY_COLUMNS,
        "created_at DESC, sequence DESC",
        columns.pg_delivery,
        conditions,
        limit,
        offset,
    )


async def pg_redeliver(conn: asyncpg.Connection, delivery_id: str, now: datetime) -> Delivery:
    old = await pg_get(conn, delivery_id)
    sequence = await conn.fetchval(
        "UPDATE subscriptions SET next_sequence = next_sequence + 1 WHERE id = $1"
        " RETURNING next_sequence - 1",
        old.subscription_id,
    )
    if sequence is None:
        raise NotFound(f"subscription {old.subscription_id!r} not found")
    new = rows.number(sequence, old.subscription_id, [NewEvent(old.event_type, {}, old.event_id)])
    await conn.execute(
        "INSERT INTO deliveries (id, subscription_id, event_id, event_type, sequence, status,"
        " attempts, created_at, next_attempt_at, redelivery_of)"
        " VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $7)",
        new[0].id,
        old.subscription_id,
        old.event_id,
        old.event_type,
        sequence,
        now,
        old.id,
    )
    await conn.execute("UPDATE deliveries SET redelivered_as = $2 WHERE id = $1", old.id, new[0].id)
    await conn.execute("SELECT pg_notify('hookyard_deliveries', '')")
    return await pg_get(conn, new[0].id)


async def pg_recover(
    conn: asyncpg.Connection, subscription_id: str, since: datetime, now: datetime
) -> list[Delivery]:
    await subscriptions.pg_get(conn, subscription_id)
    failed = await conn.fetch(
        "SELECT id FROM deliveries WHERE subscription_id = $1 AND status = 'failed'"
        " AND redelivered_as IS NULL AND created_at >= $2 ORDER BY created_at, sequence",
        subscription_id,
        as_utc(since),
    )
    return [await pg_redeliver(conn, row["id"], now) for row in failed]
