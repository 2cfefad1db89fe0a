"""stream.* settings: limits that must be positive are refused at load, naming the key."""

from __future__ import annotations

import pytest

from engine.config import Settings
from engine.errors import ConfigError


@pytest.mark.parametrize(
    "key",
    ["max_clients", "client_queue", "heartbeat", "write_timeout", "poll_interval", "keep_events"],
)
def test_stream_limits_must_be_positive(key: str) -> None:
    with pytest.raises(ConfigError, match=f"stream.{key}: must be greater than 0"):
        Settings().replace(**{f"stream.{key}": 0})
