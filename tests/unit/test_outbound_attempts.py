"""The attempt outcome: what one finished delivery attempt decides, from plain data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.outbound import events as outbound_events
from engine.outbound.attempts import attempt_outcome
from engine.outbound.breaker import Breaker, Candidate, choose
from engine.outbound.delivery import FAILED, PENDING, SUCCEEDED, AttemptResult, Delivery
from engine.outbound.subscriptions import Secret, Subscription

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _delivery(event_type: str = "execution.finished", attempts: int = 2) -> Delivery:
    return Delivery("d1", "s1", "e1", event_type, 1, "delivering", attempts, T0)


def _subscription(
    failing_since: datetime | None = None, enabled: bool = True, **circuit
) -> Subscription:
    return Subscription(
        "s1",
        "https://example.test/",
        {},
        ("*",),
        (Secret("k"),),
        enabled=enabled,
        failing_since=failing_since,
        **circuit,
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
    assert outcome.subscription_changes == {"failing_since": T0, "consecutive_failures": 1}
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
    assert outcome.subscription_changes == {"consecutive_failures": 1}


def test_the_breaker_trips_at_its_threshold_and_a_success_closes_it() -> None:
    breaker = Breaker(threshold=3, cooldown=60)
    retry = T0 + timedelta(seconds=5)
    second = _subscription(failing_since=T0, consecutive_failures=1)
    below = attempt_outcome(_delivery(), second, _failed(T0), retry, 0, breaker)
    assert below.subscription_changes == {"consecutive_failures": 2}
    third = _subscription(failing_since=T0, consecutive_failures=2)
    tripped = attempt_outcome(_delivery(), third, _failed(T0), retry, 0, breaker)
    assert tripped.subscription_changes == {
        "consecutive_failures": 3,
        "circuit_open_until": T0 + timedelta(seconds=60),
    }
    # A failed probe trips it for another cooldown, from the probe's end.
    probe_at = T0 + timedelta(seconds=61)
    probing = _subscription(failing_since=T0, consecutive_failures=3, circuit_open_until=T0)
    again = attempt_outcome(_delivery(), probing, _failed(probe_at), retry, 0, breaker)
    assert again.subscription_changes["circuit_open_until"] == probe_at + timedelta(seconds=60)
    closed = attempt_outcome(
        _delivery(), probing, AttemptResult(probe_at, 200, None, 1.0, ""), None, 0, breaker
    )
    assert closed.subscription_changes == {
        "consecutive_failures": 0,
        "circuit_open_until": None,
        "failing_since": None,
    }
    assert probing.circuit_state(T0 - timedelta(seconds=1)) == "open"
    assert probing.circuit_state(T0) == "half_open"
    assert _subscription().circuit_state(T0) == "closed"


def test_a_breaker_with_no_threshold_never_trips() -> None:
    subscription = _subscription(consecutive_failures=99)
    outcome = attempt_outcome(_delivery(), subscription, _failed(T0), None, 0, Breaker(threshold=0))
    assert "circuit_open_until" not in outcome.subscription_changes


def test_a_half_open_subscription_gets_one_probe_and_the_others_their_share() -> None:
    candidates = [
        Candidate("d1", "half", True),
        Candidate("d2", "half", True),
        Candidate("d3", "ok", False),
        Candidate("d4", "ok", False),
        Candidate("d5", "ok", False),
        Candidate("d6", "busy-half", True),
    ]
    chosen, probes = choose(candidates, limit=10, per_subscription=2, busy={"busy-half": 1})
    assert chosen == ["d1", "d3", "d4"] and probes == {"half"}
    chosen, probes = choose(candidates, limit=1, per_subscription=2, busy={})
    assert chosen == ["d1"] and probes == {"half"}
