"""The delivery retry policy and the event envelope: plain data in, decisions out."""

from __future__ import annotations

import json
import random

import pytest

from engine.config import OutboundSettings
from engine.errors import ConfigError
from engine.outbound.events import envelope
from engine.outbound.policy import RetryPolicy, parse_duration


def test_the_default_schedule_is_svix_like() -> None:
    policy = RetryPolicy.from_settings(OutboundSettings())
    assert policy.delays == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert policy.max_attempts == 8


def test_identus_three_attempts_five_seconds_apart() -> None:
    policy = RetryPolicy.parse(["0s", "5s", "5s"])
    assert [policy.delay_after(n) for n in (1, 2, 3)] == [5.0, 5.0, None]


def test_jitter_stays_within_its_band_and_varies() -> None:
    policy = RetryPolicy.parse(["0s", "100s"], jitter=0.2)
    rng = random.Random(7)
    delays = {policy.delay_after(1, rng) for _ in range(50)}
    assert all(80.0 <= d <= 120.0 for d in delays)
    assert len(delays) > 1


@pytest.mark.parametrize(
    ("text", "seconds"), [("0s", 0), ("90", 90), ("1.5m", 90), ("2h", 7200), ("1d", 86400)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "x") == seconds


@pytest.mark.parametrize(
    ("schedule", "jitter", "message"),
    [
        ([], 0.0, "at least one delay"),
        (["5s"], 0.0, "start the schedule with 0s"),
        (["0s", "soon"], 0.0, "not a duration"),
        (["0s"], 1.5, "retry_jitter"),
    ],
)
def test_bad_schedules_are_config_errors(schedule, jitter, message) -> None:
    with pytest.raises(ConfigError, match=message):
        RetryPolicy.parse(schedule, jitter)


def test_envelope_keeps_data_verbatim() -> None:
    body = envelope("e1", "2024-01-01T00:00:00Z", "rule.enforced", 7, '{"n":123456789012345678901}')
    decoded = json.loads(body)
    assert decoded == {
        "id": "e1",
        "ts": "2024-01-01T00:00:00Z",
        "type": "rule.enforced",
        "sequence": 7,
        "data": {"n": 123456789012345678901},
    }
