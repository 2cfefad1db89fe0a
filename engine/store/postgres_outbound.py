"""PostgreSQL statements for outbound webhooks: the event outbox, subscriptions, deliveries.

Same shape as sqlite_outbound. Sequence numbers come from an UPDATE of the subscription
row, whose lock is held until commit, so a subscription's numbers grow in commit order
(subscriptions are locked in id order, so two writers cannot deadlock on them). Claims
lock candidate deliveries with `FOR UPDATE SKIP LOCKED` and use the database clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from engine.errors import Conflict, LeaseLost, NotFound
from engine.model.records import Page
from engine.outbound.attempts import attempt_outcome
from engine.outbound.delivery import DELIVERING, PENDING, AttemptResult, ClaimedDelivery, Delivery
from engine.outbound.events import NewEvent
from engine.outbound.subscriptions import GLOBAL_SUBSCRIPTION_ID, Subscription
from engine.store import outbound_rows as rows
from engine.store.codec import Condition, as_utc, dumps
from engine.store.paging import postgres_page

SUBSCRIPTION_COLUMNS = ", ".join(rows.SUBSCRIPTION_FIELDS)
DELIVERY_COLUMNS = ", ".join(rows.DELIVERY_FIELDS)
_PREFIXED_SUBSCRIPTION = ", ".join(f"s.{c} AS s_{c}" for c in rows.SUBSCRIPTION_FIELDS)
_NEW_TOKEN = "replace(gen_random_uuid()::text, '-', '')"

EventSource = Callable[[], Sequence[NewEvent]]


def _to_time(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def _subscription(row: asyncpg.Record, prefix: str = "") -> Subscription:
    return rows.subscription_from_row(row, _to_time, prefix)


def _delivery(row: asyncpg.Record) -> Delivery:
    return rows.delivery_from_row(row, _to_time)


# --- the outbox -------------------------------------------------------------------------


async def emit(conn: asyncpg.Connection, now: datetime, source: EventSource) -> int:
    """Store the events `source` builds and their deliveries; returns deliveries made."""
    subscribed = await conn.fetch("SELECT id, events FROM subscriptions WHERE enabled")
    if not subscribed:
        return 0
    wanted = rows.fan_out([(r["id"], r["events"]) for r in subscribed], list(source()))
    return await _store_deliveries(conn, now, wanted)


async def _store_deliveries(
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


# --- subscriptions ------------------------------------------------------------------------


def _value(name: str, value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value)
    if name == "enabled":
        return bool(value)
    return rows.column_value(name, value)


async def insert_subscription(conn: asyncpg.Connection, sub: Subscription) -> None:
    values = [_value(name, getattr(sub, name)) for name in rows.SUBSCRIPTION_FIELDS]
    marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    await conn.execute(
        f"INSERT INTO subscriptions ({SUBSCRIPTION_COLUMNS}) VALUES ({marks})", *values
    )


async def get_subscription(conn: asyncpg.Connection, subscription_id: str) -> Subscription:
    row = await conn.fetchrow(
        f"SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = $1", subscription_id
    )
    if row is None:
        raise NotFound(f"subscription {subscription_id!r} not found")
    return _subscription(row)


async def list_subscriptions(conn: asyncpg.Connection) -> list[Subscription]:
    found = await conn.fetch(
        f"SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions ORDER BY created_at, id"
    )
    return [_subscription(row) for row in found]


async def update_subscription(
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
            *[_value(name, changes[name]) for name in names],
        )
    return await get_subscription(conn, subscription_id)


async def delete_subscription(conn: asyncpg.Connection, subscription_id: str) -> None:
    deleted = await conn.fetchval(
        "DELETE FROM subscriptions WHERE id = $1 RETURNING id", subscription_id
    )
    if deleted is None:
        raise NotFound(f"subscription {subscription_id!r} not found")
    await conn.execute("DELETE FROM deliveries WHERE subscription_id = $1", subscription_id)


async def put_global_subscription(conn: asyncpg.Connection, sub: Subscription | None) -> None:
    if sub is None:
        await conn.execute(
            "UPDATE subscriptions SET enabled = false, disabled_reason = $2 WHERE id = $1",
            GLOBAL_SUBSCRIPTION_ID,
            "outbound.global_webhook_url is no longer set",
        )
        return
    values = [_value(name, getattr(sub, name)) for name in rows.SUBSCRIPTION_FIELDS]
    marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    inserted = await conn.fetchval(
        f"INSERT INTO subscriptions ({SUBSCRIPTION_COLUMNS}) VALUES ({marks})"
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


# --- deliveries -----------------------------------------------------------------------------


async def claim_deliveries(
    conn: asyncpg.Connection,
    limit: int,
    lease_seconds: float,
    per_subscription: int,
    busy: Mapping[str, int],
    now: datetime,
) -> list[ClaimedDelivery]:
    # `now` is unused: leases follow the database's clock, shared by every process.
    candidates = await conn.fetch(
        "SELECT d.id, d.subscription_id FROM deliveries d"
        " JOIN subscriptions s ON s.id = d.subscription_id AND s.enabled"
        " WHERE d.status IN ('pending', 'delivering') AND d.next_attempt_at <= now()"
        " ORDER BY d.next_attempt_at, d.id LIMIT $1 FOR UPDATE OF d SKIP LOCKED",
        rows.CLAIM_WINDOW,
    )
    taken: dict[str, int] = dict(busy)
    chosen: list[str] = []
    for row in candidates:
        if len(chosen) >= limit:
            break
        subscription_id = row["subscription_id"]
        if taken.get(subscription_id, 0) >= per_subscription:
            continue
        taken[subscription_id] = taken.get(subscription_id, 0) + 1
        chosen.append(row["id"])
    if not chosen:
        return []
    await conn.execute(
        f"UPDATE deliveries SET status = $1, lease_token = {_NEW_TOKEN},"
        " next_attempt_at = now() + make_interval(secs => $2) WHERE id = ANY($3::text[])",
        DELIVERING,
        float(lease_seconds),
        chosen,
    )
    found = await conn.fetch(
        f"SELECT {', '.join('d.' + c for c in rows.DELIVERY_FIELDS)},"
        f" e.ts AS event_ts, e.data AS event_data, {_PREFIXED_SUBSCRIPTION}"
        " FROM deliveries d JOIN events e ON e.id = d.event_id"
        " JOIN subscriptions s ON s.id = d.subscription_id WHERE d.id = ANY($1::text[])"
        " ORDER BY d.next_attempt_at, d.id",
        chosen,
    )
    return [
        ClaimedDelivery(
            delivery=_delivery(row),
            subscription=_subscription(row, "s_"),
            event_ts=as_utc(row["event_ts"]),
            event_data=row["event_data"],
        )
        for row in found
    ]


async def complete_delivery(
    conn: asyncpg.Connection,
    delivery_id: str,
    lease_token: str,
    result: AttemptResult,
    retry_at: datetime | None,
    auto_disable_after: float,
) -> Delivery:
    row = await conn.fetchrow(
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries"
        " WHERE id = $1 AND lease_token = $2 AND status = $3 FOR UPDATE",
        delivery_id,
        lease_token,
        DELIVERING,
    )
    if row is None:
        raise await _missing_or_lost(conn, delivery_id)
    delivery = _delivery(row)
    subscription = await get_subscription(conn, delivery.subscription_id)
    outcome = attempt_outcome(delivery, subscription, result, retry_at, auto_disable_after)
    await conn.execute(
        "UPDATE deliveries SET status = $2, attempts = $3, next_attempt_at = $4,"
        " last_status_code = $5, last_error = $6, last_response_ms = $7,"
        " last_response_excerpt = $8, lease_token = NULL,"
        " attempt_log = (attempt_log::jsonb || jsonb_build_array($9::jsonb))::text"
        " WHERE id = $1",
        delivery_id,
        outcome.status,
        outcome.attempts,
        _to_time(outcome.next_attempt_at),
        result.status_code,
        result.error,
        result.response_ms,
        result.response_excerpt,
        dumps(outcome.attempt_record),
    )
    if outcome.subscription_changes:
        await update_subscription(conn, delivery.subscription_id, outcome.subscription_changes)
    if outcome.exhausted_event is not None:
        exhausted = outcome.exhausted_event
        await emit(conn, result.at, lambda: [exhausted])
    return await get_delivery(conn, delivery_id)


async def release_deliveries(
    conn: asyncpg.Connection, leases: Mapping[str, str], now: datetime
) -> None:
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


async def _missing_or_lost(conn: asyncpg.Connection, delivery_id: str) -> Exception:
    if await conn.fetchval("SELECT 1 FROM deliveries WHERE id = $1", delivery_id) is None:
        return NotFound(f"delivery {delivery_id!r} not found")
    return LeaseLost(f"delivery {delivery_id!r}: the lease token is no longer current")


async def get_delivery(conn: asyncpg.Connection, delivery_id: str) -> Delivery:
    row = await conn.fetchrow(
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1", delivery_id
    )
    if row is None:
        raise NotFound(f"delivery {delivery_id!r} not found")
    return _delivery(row)


async def list_deliveries(
    conn: asyncpg.Connection, conditions: Sequence[Condition], limit: int, offset: int
) -> Page:
    return await postgres_page(
        conn,
        "deliveries",
        DELIVERY_COLUMNS,
        "created_at DESC, sequence DESC",
        _delivery,
        conditions,
        limit,
        offset,
    )


async def redeliver(conn: asyncpg.Connection, delivery_id: str, now: datetime) -> Delivery:
    old = await get_delivery(conn, delivery_id)
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
    return await get_delivery(conn, new[0].id)


async def recover(
    conn: asyncpg.Connection, subscription_id: str, since: datetime, now: datetime
) -> list[Delivery]:
    await get_subscription(conn, subscription_id)
    failed = await conn.fetch(
        "SELECT id FROM deliveries WHERE subscription_id = $1 AND status = 'failed'"
        " AND redelivered_as IS NULL AND created_at >= $2 ORDER BY created_at, sequence",
        subscription_id,
        as_utc(since),
    )
    return [await redeliver(conn, row["id"], now) for row in failed]
