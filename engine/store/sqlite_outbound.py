"""SQLite statements for outbound webhooks: the event outbox, subscriptions, deliveries.

`emit` runs inside the writer transaction of the state change that causes the events, so
an event is stored if and only if that change commits. With no enabled subscription it
costs one indexed read of an empty table and builds nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from engine.errors import Conflict, LeaseLost, NotFound
from engine.model.records import Page
from engine.outbound.attempts import attempt_outcome
from engine.outbound.delivery import (
    DELIVERING,
    PENDING,
    AttemptResult,
    ClaimedDelivery,
    Delivery,
)
from engine.outbound.events import NewEvent
from engine.outbound.subscriptions import GLOBAL_SUBSCRIPTION_ID, Subscription
from engine.store import outbound_rows as rows
from engine.store.codec import Condition, dumps, time_from_text, time_to_text
from engine.store.paging import sqlite_page

SUBSCRIPTION_COLUMNS = ", ".join(rows.SUBSCRIPTION_FIELDS)
DELIVERY_COLUMNS = ", ".join(rows.DELIVERY_FIELDS)
_PREFIXED_SUBSCRIPTION = ", ".join(f"s.{c} AS s_{c}" for c in rows.SUBSCRIPTION_FIELDS)

EventSource = Callable[[], Sequence[NewEvent]]


def _t(moment: datetime | None) -> str | None:
    return time_to_text(moment)


def _subscription(row: sqlite3.Row, prefix: str = "") -> Subscription:
    return rows.subscription_from_row(row, time_from_text, prefix)


def _delivery(row: sqlite3.Row) -> Delivery:
    return rows.delivery_from_row(row, time_from_text)


# --- the outbox -------------------------------------------------------------------------


def emit(conn: sqlite3.Connection, now: datetime, source: EventSource) -> int:
    """Store the events `source` builds and their deliveries; returns deliveries made."""
    subscribed = conn.execute("SELECT id, events FROM subscriptions WHERE enabled = 1").fetchall()
    if not subscribed:
        return 0
    new_events = list(source())
    wanted = rows.fan_out([(r["id"], r["events"]) for r in subscribed], new_events)
    return _store_deliveries(conn, now, wanted)


def _store_deliveries(
    conn: sqlite3.Connection, now: datetime, wanted: Mapping[str, Sequence[NewEvent]]
) -> int:
    if not wanted:
        return 0
    at = _t(now)
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
        [(e.id, e.type, _t(e.ts), dumps(e.data, e.type)) for e in stored_events.values()],
    )
    conn.executemany(
        "INSERT INTO deliveries (id, subscription_id, event_id, event_type, sequence, status,"
        " attempts, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
        new_rows,
    )
    return len(new_rows)


# --- subscriptions ------------------------------------------------------------------------


def insert_subscription(conn: sqlite3.Connection, sub: Subscription) -> None:
    values = [_value(name, getattr(sub, name)) for name in rows.SUBSCRIPTION_FIELDS]
    marks = ", ".join("?" * len(values))
    conn.execute(f"INSERT INTO subscriptions ({SUBSCRIPTION_COLUMNS}) VALUES ({marks})", values)


def _value(name: str, value: Any) -> Any:
    if isinstance(value, datetime):
        return _t(value)
    if name == "enabled":
        return int(bool(value))
    return rows.column_value(name, value)


def get_subscription(conn: sqlite3.Connection, subscription_id: str) -> Subscription:
    row = conn.execute(
        f"SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = ?", (subscription_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"subscription {subscription_id!r} not found")
    return _subscription(row)


def list_subscriptions(conn: sqlite3.Connection) -> list[Subscription]:
    found = conn.execute(
        f"SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions ORDER BY created_at, id"
    ).fetchall()
    return [_subscription(row) for row in found]


def update_subscription(
    conn: sqlite3.Connection, subscription_id: str, changes: Mapping[str, Any]
) -> Subscription:
    unknown = set(changes) - rows.UPDATABLE
    if unknown:
        raise Conflict(f"subscription columns {sorted(unknown)} cannot be updated")
    if changes:
        assignments = ", ".join(f"{name} = ?" for name in changes)
        values = [_value(name, value) for name, value in changes.items()]
        conn.execute(
            f"UPDATE subscriptions SET {assignments} WHERE id = ?", [*values, subscription_id]
        )
    return get_subscription(conn, subscription_id)


def delete_subscription(conn: sqlite3.Connection, subscription_id: str) -> None:
    if conn.execute("DELETE FROM subscriptions WHERE id = ?", (subscription_id,)).rowcount == 0:
        raise NotFound(f"subscription {subscription_id!r} not found")
    conn.execute("DELETE FROM deliveries WHERE subscription_id = ?", (subscription_id,))


def put_global_subscription(conn: sqlite3.Connection, sub: Subscription | None) -> None:
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
        insert_subscription(conn, sub)
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


# --- deliveries -----------------------------------------------------------------------------


def claim_deliveries(
    conn: sqlite3.Connection,
    limit: int,
    lease_seconds: float,
    per_subscription: int,
    busy: Mapping[str, int],
    now: datetime,
) -> list[ClaimedDelivery]:
    at = _t(now)
    candidates = conn.execute(
        "SELECT d.id, d.subscription_id FROM deliveries d INDEXED BY deliveries_due"
        " JOIN subscriptions s ON s.id = d.subscription_id AND s.enabled = 1"
        " WHERE d.status IN ('pending', 'delivering') AND d.next_attempt_at <= ?"
        " ORDER BY d.next_attempt_at, d.id LIMIT ?",
        (at, rows.CLAIM_WINDOW),
    ).fetchall()
    chosen = _choose(candidates, limit, per_subscription, busy)
    if not chosen:
        return []
    marks = ",".join("?" * len(chosen))
    conn.execute(
        "UPDATE deliveries SET status = ?, lease_token = lower(hex(randomblob(16))),"
        f" next_attempt_at = ? WHERE id IN ({marks})",
        [DELIVERING, _t(now + timedelta(seconds=lease_seconds)), *chosen],
    )
    return _claimed(conn, chosen)


def _choose(
    candidates: Sequence[Any], limit: int, per_subscription: int, busy: Mapping[str, int]
) -> list[str]:
    taken: dict[str, int] = dict(busy)
    chosen = []
    for row in candidates:
        if len(chosen) >= limit:
            break
        subscription_id = row["subscription_id"]
        if taken.get(subscription_id, 0) >= per_subscription:
            continue
        taken[subscription_id] = taken.get(subscription_id, 0) + 1
        chosen.append(row["id"])
    return chosen


def _claimed(conn: sqlite3.Connection, ids: Sequence[str]) -> list[ClaimedDelivery]:
    marks = ",".join("?" * len(ids))
    found = conn.execute(
        f"SELECT {', '.join('d.' + c for c in rows.DELIVERY_FIELDS)},"
        f" e.ts AS event_ts, e.data AS event_data, {_PREFIXED_SUBSCRIPTION}"
        " FROM deliveries d JOIN events e ON e.id = d.event_id"
        f" JOIN subscriptions s ON s.id = d.subscription_id WHERE d.id IN ({marks})"
        " ORDER BY d.next_attempt_at, d.id",
        list(ids),
    ).fetchall()
    return [
        ClaimedDelivery(
            delivery=_delivery(row),
            subscription=_subscription(row, "s_"),
            event_ts=time_from_text(row["event_ts"]),  # type: ignore[arg-type]
            event_data=row["event_data"],
        )
        for row in found
    ]


def complete_delivery(
    conn: sqlite3.Connection,
    delivery_id: str,
    lease_token: str,
    result: AttemptResult,
    retry_at: datetime | None,
    auto_disable_after: float,
) -> Delivery:
    row = conn.execute(
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries"
        " WHERE id = ? AND lease_token = ? AND status = ?",
        (delivery_id, lease_token, DELIVERING),
    ).fetchone()
    if row is None:
        raise _missing_or_lost(conn, delivery_id)
    delivery = _delivery(row)
    subscription = get_subscription(conn, delivery.subscription_id)
    outcome = attempt_outcome(delivery, subscription, result, retry_at, auto_disable_after)
    conn.execute(
        "UPDATE deliveries SET status = ?, attempts = ?, next_attempt_at = ?,"
        " last_status_code = ?, last_error = ?, last_response_ms = ?,"
        " last_response_excerpt = ?, lease_token = NULL,"
        " attempt_log = json_insert(attempt_log, '$[#]', json(?)) WHERE id = ?",
        (
            outcome.status,
            outcome.attempts,
            _t(outcome.next_attempt_at),
            result.status_code,
            result.error,
            result.response_ms,
            result.response_excerpt,
            dumps(outcome.attempt_record),
            delivery_id,
        ),
    )
    if outcome.subscription_changes:
        update_subscription(conn, delivery.subscription_id, outcome.subscription_changes)
    if outcome.exhausted_event is not None:
        exhausted = outcome.exhausted_event
        emit(conn, result.at, lambda: [exhausted])
    return get_delivery(conn, delivery_id)


def release_deliveries(conn: sqlite3.Connection, leases: Mapping[str, str], now: datetime) -> None:
    conn.executemany(
        "UPDATE deliveries SET status = ?, lease_token = NULL, next_attempt_at = ?"
        " WHERE id = ? AND lease_token = ? AND status = ?",
        [(PENDING, _t(now), did, token, DELIVERING) for did, token in leases.items()],
    )


def _missing_or_lost(conn: sqlite3.Connection, delivery_id: str) -> Exception:
    if conn.execute("SELECT 1 FROM deliveries WHERE id = ?", (delivery_id,)).fetchone() is None:
        return NotFound(f"delivery {delivery_id!r} not found")
    return LeaseLost(f"delivery {delivery_id!r}: the lease token is no longer current")


def get_delivery(conn: sqlite3.Connection, delivery_id: str) -> Delivery:
    row = conn.execute(
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"delivery {delivery_id!r} not found")
    return _delivery(row)


def list_deliveries(
    conn: sqlite3.Connection, conditions: Sequence[Condition], limit: int, offset: int
) -> Page:
    return sqlite_page(
        conn,
        "deliveries",
        DELIVERY_COLUMNS,
        "created_at DESC, sequence DESC",
        _delivery,
        conditions,
        limit,
        offset,
    )


def redeliver(conn: sqlite3.Connection, delivery_id: str, now: datetime) -> Delivery:
    """A new pending delivery of the same event to the same subscription, next in sequence."""
    old = get_delivery(conn, delivery_id)
    get_subscription(conn, old.subscription_id)  # NotFound if it was deleted
    event = conn.execute("SELECT id, type FROM events WHERE id = ?", (old.event_id,)).fetchone()
    sequence = conn.execute(
        "UPDATE subscriptions SET next_sequence = next_sequence + 1 WHERE id = ?"
        " RETURNING next_sequence - 1",
        (old.subscription_id,),
    ).fetchone()[0]
    new = rows.number(sequence, old.subscription_id, [NewEvent(event["type"], {}, event["id"])])[0]
    at = _t(now)
    conn.execute(
        "INSERT INTO deliveries (id, subscription_id, event_id, event_type, sequence, status,"
        " attempts, created_at, next_attempt_at, redelivery_of)"
        " VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
        (new.id, old.subscription_id, old.event_id, old.event_type, sequence, at, at, old.id),
    )
    conn.execute("UPDATE deliveries SET redelivered_as = ? WHERE id = ?", (new.id, old.id))
    return get_delivery(conn, new.id)


def recover(
    conn: sqlite3.Connection, subscription_id: str, since: datetime, now: datetime
) -> list[Delivery]:
    get_subscription(conn, subscription_id)
    failed = conn.execute(
        "SELECT id FROM deliveries WHERE subscription_id = ? AND status = 'failed'"
        " AND redelivered_as IS NULL AND created_at >= ? ORDER BY created_at, sequence",
        (subscription_id, _t(since)),
    ).fetchall()
    return [redeliver(conn, row["id"], now) for row in failed]
