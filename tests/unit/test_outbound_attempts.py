"""The attempt outcome: what one finished delivery attempt decides, from plain data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.outbound import events as outbound_events
from engine.outbound.attempts import attempt_outcome
from engine.outbound.delivery import FAILED, PENDING, SUCCEEDED, AttemptResult, Delivery
from engine.outbound.subscriptions import Secret, Subscription

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _delivery(event_type: str = "execution.finished", attempts: int = 2) -> Delivery:
    return Delivery("d1", "s1", "e1", event_type, 1, "delivering", attempts, T0)


def _subscription(failing_since: datetime | None = None, enabled: bool = True) -> Subscription:
    return Subscription(
        "s1",
        "https://example.test/",
        {},
        ("*",),
        (Secret("k"),),
        enabled=enabled,
        failing_since=failing_since,
    )


def _failed(at: datetime) -> AttemptResult:
    return AttemptResult(at, 500, None, 3.0, "oops")


def test_a_success_ends_the_failing_period_and_logs_the_attempt() -> None:
    result = AttemptResult(T0, 204, None, 1.0, "")
    outcome = attempt_outcome(_delivery(), _subscription(failing_since=T0), result, None, 60)
    assert outcome.status == SUCCEEDED
    assert outcome.attempts == 3
    assert outcome.attempt_record == result.to_json(3)
    assert outcome.subscription_changes == {"failing_since": None}
    assert outcome.exhausted_event is None


def test_a_failure_with_a_retry_left_waits_and_starts_the_failing_period() -> None:
    retry = T0 + timedelta(seconds=5)
    outcome = attempt_outcome(_delivery(), _subscription(), _failed(T0), retry, 60)
    assert (outcome.status, outcome.next_attempt_at) == (PENDING, retry)
    assert outcome.subscription_changes == {"failing_since": T0}
    assert outcome.exhausted_event is None


def test_the_last_failure_emits_exhausted_and_disables_after_the_failing_period() -> None:
    at = T0 + timedelta(seconds=61)
    outcome = attempt_outcome(_delivery(), _subscription(failing_since=T0), _failed(at), None, 60)
    assert outcome.status == FAILED
    assert outcome.exhausted_event is not None
    assert outcome.exhausted_event.type == outbound_events.DELIVERY_EXHAUSTED
    assert outcome.subscription_changes["enabled"] is False
    assert "auto_disable_after" in outcome.subscription_changes["disabled_reason"]


def test_no_disable_before_the_period_nor_an_exhausted_notice_about_one() -> None:
    at = T0 + timedelta(seconds=59)
    delivery = _delivery(event_type=outbound_events.DELIVERY_EXHAUSTED)
    outcome = attempt_outcome(delivery, _subscription(failing_since=T0), _failed(at), None, 60)
    assert outcome.status == FAILED
    assert outcome.exhausted_event is None
    assert outcome.subscription_changes == {}
