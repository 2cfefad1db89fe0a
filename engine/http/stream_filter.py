"""What one stream client asked for: `events=` patterns, `action_refs=`, `execution_ids=`,
`end_event` + `end_execution_id` (StackStorm's st2stream query), checked as hostile input.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

from engine.errors import IngestError
from engine.http.stream_hub import StreamEvent
from engine.model.records import TERMINAL_EXECUTION_STATUSES
from engine.model.stream import (
    ANNOUNCEMENT_PREFIX,
    DEFAULT_EVENTS,
    EVENT_NAMES,
    EXECUTION_UPDATE,
    LIVEACTION_UPDATE,
)

MAX_PATTERNS = 50
MAX_PATTERN_LENGTH = 200
MAX_IDS = 100
_PATTERN = re.compile(r"^[A-Za-z0-9_.*?\[\]-]+$")


@dataclass(frozen=True)
class StreamFilter:
    events: tuple[str, ...]
    action_refs: frozenset[str]
    execution_ids: frozenset[str]
    end_event: str | None
    end_execution_id: str | None
    # Event name -> whether a pattern matches it (few names, many events).
    _names: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def wants(self, event: StreamEvent) -> bool:
        named = self._names.get(event.name)
        if named is None:
            named = any(fnmatch.fnmatchcase(event.name, pattern) for pattern in self.events)
            if len(self._names) < MAX_PATTERNS:  # announcements' routes are open-ended
                self._names[event.name] = named
        if not named:
            return False
        if self.action_refs and event.action_ref not in self.action_refs:
            return False
        return not self.execution_ids or event.execution_id in self.execution_ids

    def ends_with(self, event: StreamEvent) -> bool:
        return (
            self.end_event is not None
            and event.name == self.end_event
            and event.execution_id == self.end_execution_id
            and event.status in TERMINAL_EXECUTION_STATUSES
        )


def parse_filter(query: Any) -> StreamFilter:
    events = _list(query, "events", MAX_PATTERNS)
    for pattern in events:
        if len(pattern) > MAX_PATTERN_LENGTH or not _PATTERN.match(pattern):
            raise IngestError(
                f"events: {pattern[:80]!r} is not an event name or pattern (letters, digits,"
                " '.', '_', '-' and the wildcards '*', '?', '[...]')"
            )
        if not _known(pattern):
            raise IngestError(
                f"events: {pattern!r} matches no event; known: {', '.join(EVENT_NAMES)},"
                f" {ANNOUNCEMENT_PREFIX}<route>"
            )
    end_event = query.get("end_event") or None
    end_execution_id = query.get("end_execution_id") or None
    if (end_event is None) != (end_execution_id is None):
        raise IngestError("end_event and end_execution_id go together: give both or neither")
    if end_event is not None and end_event not in (EXECUTION_UPDATE, LIVEACTION_UPDATE):
        raise IngestError(f"end_event must be {EXECUTION_UPDATE} or {LIVEACTION_UPDATE}")
    return StreamFilter(
        events=tuple(events) or DEFAULT_EVENTS,
        action_refs=frozenset(_list(query, "action_refs", MAX_IDS)),
        execution_ids=frozenset(_list(query, "execution_ids", MAX_IDS)),
        end_event=end_event,
        end_execution_id=end_execution_id,
    )


def _list(query: Any, name: str, limit: int) -> list[str]:
    items = [
        item.strip()
        for value in query.getall(name, [])
        for item in value.split(",")
        if item.strip()
    ]
    if len(items) > limit:
        raise IngestError(f"{name}: at most {limit} values, got {len(items)}")
    return items


def _known(pattern: str) -> bool:
    if pattern.startswith(ANNOUNCEMENT_PREFIX) or fnmatch.fnmatchcase(
        ANNOUNCEMENT_PREFIX + "x", pattern
    ):
        return True
    return any(fnmatch.fnmatchcase(name, pattern) for name in EVENT_NAMES)
