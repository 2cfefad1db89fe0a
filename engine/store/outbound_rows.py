"""Outbound rows (subscriptions, events, deliveries) to records and back, for both stores.

Also the outbox fan-out both stores share: which subscriptions get which new event. What
a finished attempt changes is decided in engine.outbound.attempts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.model.records import new_id
from engine.outbound import events as outbound_events
from engine.outbound.delivery import Delivery
from engine.outbound.events import NewEvent
from engine.outbound.subscriptions import Secret, Subscription
from engine.store.codec import FilterSpec, ToTime, dumps, loads, parse_time

SUBSCRIPTION_FIELDS = (
    "id",
    "url",
    "custom_headers",
    "events",
    "secrets",
    "description",
    "enabled",
    "signing_scheme",
    "signing_options",
    "created_at",
    "failing_since",
    "disabled_reason",
    "consecutive_failures",
    "circuit_open_until",
    "rate_limit",
)
DELIVERY_FIELDS = (
    "id",
    "subscription_id",
    "event_id",
    "event_type",
    "sequence",
    "status",
    "attempts",
    "created_at",
    "next_attempt_at",
    "last_status_code",
    "last_error",
    "last_response_ms",
    "last_response_excerpt",
    "attempt_log",
    "redelivery_of",
    "lease_token",
)
# Columns a subscription update may set (from engine.outbound.subscriptions.changes).
UPDATABLE = frozenset(
    {
        "url",
        "custom_headers",
        "events",
        "secrets",
        "description",
        "enabled",
        "signing_scheme",
        "signing_options",
        "failing_since",
        "disabled_reason",
        "consecutive_failures",
        "circuit_open_until",
        "rate_limit",
    }
)
JSON_COLUMNS = frozenset({"custom_headers", "events", "secrets", "signing_options", "attempt_log"})
DELIVERY_FILTERS = {
    "subscription": FilterSpec("subscription_id", "eq"),
    "status": FilterSpec("status", "eq"),
    "event_type": FilterSpec("event_type", "eq"),
    "event": FilterSpec("event_id", "eq"),
    "created_gt": FilterSpec("created_at", "gt"),
    "created_lt": FilterSpec("created_at", "lt"),
}
# Claims look at this many due deliveries at most, then pick by subscription room.
CLAIM_WINDOW = 500


def secrets_to_json(secrets: Sequence[Secret]) -> str:
    return dumps([s.to_json() for s in secrets])


def column_value(name: str, value: Any) -> Any:
    """A record value as both stores take it (JSON as text; datetimes left to the caller)."""
    if name == "secrets":
        return secrets_to_json(value)
    if name in JSON_COLUMNS:
        return dumps(list(value) if isinstance(value, tuple) else value, name)
    return value


def subscription_from_row(row: Any, to_time: ToTime, prefix: str = "") -> Subscription:
    def col(name: str) -> Any:
        return row[prefix + name]

    secrets = tuple(
        Secret(s["value"], parse_time(s["expires_at"], "expires_at") if s["expires_at"] else None)
        for s in loads(col("secrets"))
    )
    return Subscription(
        id=col("id"),
        url=col("url"),
        custom_headers=loads(col("custom_headers")),
        events=tuple(loads(col("events"))),
        secrets=secrets,
        description=col("description"),
        enabled=bool(col("enabled")),
        signing_scheme=col("signing_scheme"),
        signing_options=loads(col("signing_options")),
        created_at=to_time(col("created_at")),
        failing_since=to_time(col("failing_since")),
        disabled_reason=col("disabled_reason"),
        consecutive_failures=col("consecutive_failures"),
        circuit_open_until=to_time(col("circuit_open_until")),
        rate_limit=col("rate_limit"),
    )


def delivery_from_row(row: Any, to_time: ToTime) -> Delivery:
    return Delivery(
        id=row["id"],
        subscription_id=row["subscription_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        sequence=row["sequence"],
        status=row["status"],
        attempts=row["attempts"],
        created_at=to_time(row["created_at"]),  # type: ignore[arg-type]
        next_attempt_at=to_time(row["next_attempt_at"]),
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        last_response_ms=row["last_response_ms"],
        last_response_excerpt=row["last_response_excerpt"],
        attempt_log=tuple(loads(row["attempt_log"])),
        redelivery_of=row["redelivery_of"],
        lease_token=row["lease_token"],
    )


# --- fan-out -------------------------------------------------------------------------


@dataclass(frozen=True)
class NewDelivery:
    id: str
    subscription_id: str
    event: NewEvent
    sequence: int


def fan_out(
    subscriptions: Sequence[tuple[str, str]], new_events: Sequence[NewEvent]
) -> dict[str, list[NewEvent]]:
    """Events per subscription id, given (id, events filter JSON) of enabled ones."""
    wanted: dict[str, list[NewEvent]] = {}
    for subscription_id, filter_json in subscriptions:
        types = loads(filter_json) or ()
        matching = [
            event
            for event in new_events
            if outbound_events.wants(types, event.type)
            and event.exclude_subscription != subscription_id
        ]
        if matching:
            wanted[subscription_id] = matching
    return wanted


def number(first_sequence: int, subscription_id: str, events: Sequence[NewEvent]):
    return [
        NewDelivery(new_id(), subscription_id, event, first_sequence + offset)
        for offset, event in enumerate(events)
    ]
