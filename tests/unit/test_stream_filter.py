"""A stream client's query (engine.http.stream_filter): st2's patterns and narrowing, and
hostile values refused with a message naming the problem."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from engine.errors import IngestError
from engine.http.stream_filter import parse_filter
from engine.http.stream_hub import StreamEvent


def event(name: str, execution_id: str | None = "e1", action: str | None = "core.local",
          status: str | None = None) -> StreamEvent:  # fmt: skip
    return StreamEvent(0, 1, name, execution_id, action, status, "{}", b"")


def test_default_is_st2s_list_without_output():
    wanted = parse_filter(MultiDict())
    assert wanted.wants(event("st2.execution__update"))
    assert wanted.wants(event("st2.liveaction__create"))
    assert wanted.wants(event("st2.announcement__chatops", None, None))
    assert not wanted.wants(event("st2.execution.output__create"))
    assert not wanted.wants(event("st2.trigger_instance__create", None, None))


def test_patterns_repeated_and_comma_separated_and_narrowing():
    wanted = parse_filter(
        MultiDict(
            [
                ("events", "st2.execution*"),
                ("events", "st2.trigger_instance__create,"),
                ("action_refs", "core.local,core.noop"),
                ("execution_ids", "e1"),
            ]
        )
    )
    assert wanted.wants(event("st2.execution.output__create"))
    assert not wanted.wants(event("st2.execution__update", action="other.pack"))
    assert not wanted.wants(event("st2.execution__update", execution_id="e2"))
    assert not wanted.wants(event("st2.liveaction__update"))


def test_end_event_needs_the_execution_and_a_final_status():
    wanted = parse_filter(MultiDict(end_event="st2.execution__update", end_execution_id="e1"))
    assert not wanted.ends_with(event("st2.execution__update", status="running"))
    assert not wanted.ends_with(event("st2.execution__update", "e2", status="succeeded"))
    assert wanted.ends_with(event("st2.execution__update", status="failed"))


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"events": "st2.nothing"}, "matches no event"),
        ({"events": "st2.execution__update\r\nevent: x"}, "is not an event name"),
        ({"events": "x" * 201}, "is not an event name"),
        ({"events": ",".join(["st2.*"] * 51)}, "events: at most 50 values"),
        ({"execution_ids": ",".join(["a"] * 101)}, "execution_ids: at most 100"),
        ({"end_execution_id": "e1"}, "go together"),
        ({"end_event": "st2.trigger_instance__create", "end_execution_id": "1"}, "end_event must"),
    ],
)
def test_hostile_queries_are_refused_naming_the_problem(query, message):
    with pytest.raises(IngestError, match=message) as raised:
        parse_filter(MultiDict(query))
    assert raised.value.status == 400
