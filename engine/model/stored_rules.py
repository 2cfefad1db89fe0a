"""A rule created through the API, as the store keeps it (engine.rules.stored builds and
checks the definition; the store only keeps it, so it does not load the rules core)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class StoredRule:
    ref: str
    definition: Mapping[str, Any]
    created_at: datetime | None = None
    updated_at: datetime | None = None
