"""Delivery records: one event on its way to one subscription, with every attempt (pure).

States: pending (waiting for `next_attempt_at`), delivering (claimed with a lease),
succeeded, failed (every attempt of the schedule failed). A redelivery is a new record
for the same event and subscription, with a new sequence number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.model.records import isoformat
from engine.outbound.subscriptions import Subscription

PENDING = "pending"
DELIVERING = "delivering"
SUCCEEDED = "succeeded"
FAILED = "failed"
DELIVERY_STATUSES = (PENDING, DELIVERING, SUCCEEDED, FAILED)


@dataclass(frozen=True)
class AttemptResult:
    """What one POST to a receiver gave."""

    at: datetime
    status_code: int | None
    error: str | None
    response_ms: float | None
    response_excerpt: str | None

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300

    def to_json(self, attempt: int) -> dict[str, Any]:
        return {
            "attempt": attempt,
            "at": isoformat(self.at),
            "status_code": self.status_code,
            "error": self.error,
            "response_ms": self.response_ms,
            "response_excerpt": self.response_excerpt,
        }


@dataclass(frozen=True)
class Delivery:
    id: str
    subscription_id: str
    event_id: str
    event_type: str
    sequence: int
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    last_response_ms: float | None = None
    last_response_excerpt: str | None = None
    attempt_log: tuple[dict[str, Any], ...] = ()
    redelivery_of: str | None = None
    lease_token: str | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subscriptionId": self.subscription_id,
            "eventId": self.event_id,
            "eventType": self.event_type,
            "sequence": self.sequence,
            "status": self.status,
            "attempts": self.attempts,
            "createdAt": isoformat(self.created_at),
            "nextAttemptAt": isoformat(self.next_attempt_at),
            "lastStatusCode": self.last_status_code,
            "lastError": self.last_error,
            "lastResponseMs": self.last_response_ms,
            "lastResponseExcerpt": self.last_response_excerpt,
            "attemptLog": list(self.attempt_log),
            "redeliveryOf": self.redelivery_of,
        }


@dataclass(frozen=True)
class ClaimedDelivery:
    """A claimed delivery with what sending it needs: the event and the subscription."""

    delivery: Delivery
    subscription: Subscription
    event_ts: datetime
    # The event's data as stored JSON text, put in the envelope verbatim.
    event_data: str = field(repr=False, default="{}")
