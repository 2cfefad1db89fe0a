"""What one finished delivery attempt decides, from plain data (no I/O): the delivery's
next status, whether the subscription is failing or auto-disabled, and whether a
delivery.exhausted event is emitted. The store writes the decided outcome."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from engine.outbound import events as outbound_events
from engine.outbound.breaker import Breaker
from engine.outbound.delivery import FAILED, PENDING, SUCCEEDED, AttemptResult, Delivery
from engine.outbound.events import NewEvent
from engine.outbound.subscriptions import Subscription

# A breaker that never trips (failures in a row are still counted).
NO_BREAKER = Breaker(threshold=0)


@dataclass(frozen=True)
class AttemptOutcome:
    """What one finished attempt writes."""

    status: str
    attempts: int
    next_attempt_at: datetime | None
    # The attempt as appended to the delivery's attempt log.
    attempt_record: Mapping[str, Any]
    # Subscription columns to set (failing_since, enabled, disabled_reason).
    subscription_changes: Mapping[str, Any]
    exhausted_event: NewEvent | None


def attempt_outcome(
    delivery: Delivery,
    subscription: Subscription,
    result: AttemptResult,
    retry_at: datetime | None,
    auto_disable_after: float,
    breaker: Breaker | None = None,
) -> AttemptOutcome:
    """What one finished attempt of `delivery` changes: the delivery's status, its retry,
    the subscription's failing_since / auto-disable and circuit (engine.outbound.breaker),
    and the delivery.exhausted event when no retry is left. Plain data in, plain data
    out; the store applies it."""
    attempts = delivery.attempts + 1
    attempt_record = result.to_json(attempts)
    changes: dict[str, Any] = (breaker or NO_BREAKER).after_attempt(subscription, result)
    if result.succeeded:
        if subscription.failing_since is not None:
            changes["failing_since"] = None
        return AttemptOutcome(SUCCEEDED, attempts, None, attempt_record, changes, None)
    failing_since = subscription.failing_since or result.at
    if not subscription.failing_since:
        changes["failing_since"] = failing_since
    if retry_at is not None:
        return AttemptOutcome(PENDING, attempts, retry_at, attempt_record, changes, None)
    exhausted = None
    # An exhausted notice about an exhausted notice would bounce between two failing
    # receivers for ever: the chain stops here.
    if delivery.event_type != outbound_events.DELIVERY_EXHAUSTED:
        exhausted = outbound_events.delivery_exhausted(
            delivery.id,
            delivery.subscription_id,
            delivery.event_id,
            delivery.event_type,
            attempts,
            result.status_code,
            result.error,
        )
    if (
        auto_disable_after > 0
        and subscription.enabled
        and result.at - failing_since >= timedelta(seconds=auto_disable_after)
    ):
        changes["enabled"] = False
        changes["disabled_reason"] = (
            f"every delivery failed since {failing_since.isoformat()} "
            f"(outbound.auto_disable_after = {auto_disable_after:g} s); "
            "fix the receiver, then PATCH enabled: true and recover"
        )
    return AttemptOutcome(FAILED, attempts, None, attempt_record, changes, exhausted)
