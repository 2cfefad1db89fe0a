"""The pure part of inquiries (engine.packs.inquiry): what an ask records, its schema
checked, a response against it, who may answer; and when a workflow whose tasks wait
for a person pauses or runs on (engine.workers.workflow_settling)."""

from __future__ import annotations

import asyncio

import pytest

from engine.errors import ActionError
from engine.packs.inquiry import (
    DEFAULT_SCHEMA,
    MAX_RESPONSE_BYTES,
    InquiryError,
    asked,
    check_schema,
    may_respond,
    validate_response,
)
from engine.runners.base import RunRequest
from engine.runners.inquirer import InquirerRunner
from engine.workers.workflow_settling import settled_status

APPROVAL = {
    "type": "object",
    "properties": {
        "approved": {"type": "boolean", "required": True},
        "department_id": {"type": "number", "required": True},
        "note": {"type": "string", "maxLength": 5},
    },
}


def test_an_ask_with_no_parameters_records_stackstorms_defaults() -> None:
    assert asked({}) == {
        "schema": DEFAULT_SCHEMA,
        "roles": [],
        "users": [],
        "route": "",
        "ttl": 1440,
    }


def test_an_ask_records_what_it_was_given() -> None:
    given = {"schema": APPROVAL, "roles": ["admin"], "users": ["alice"], "route": "ops", "ttl": 5}
    assert asked(given) == given


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({"schema": "yes"}, "'schema' must be a JSON schema object, got str"),
        ({"schema": {"type": "objekt"}}, "not a valid JSON schema at type"),
        ({"schema": {"properties": {"a": {"type": 7}}}}, "at properties/a/type"),
        ({"schema": {"properties": []}}, "at properties"),
        ({"users": "alice"}, "'users' must be a list of names"),
        ({"roles": [1]}, "'roles' must be a list of names"),
        ({"route": 5}, "'route' must be a string"),
        ({"ttl": "soon"}, "'ttl' must be an integer of minutes"),
        ({"ttl": True}, "'ttl' must be an integer of minutes"),
    ],
)
def test_a_bad_ask_fails_naming_the_parameter(parameters: dict, named: str) -> None:
    with pytest.raises(ActionError) as raised:
        asked(parameters)
    assert named in str(raised.value)


def test_a_schema_nested_past_recursion_is_refused_not_crashed() -> None:
    schema: dict = {"type": "object"}
    for _ in range(3000):
        schema = {"type": "object", "properties": {"x": schema}}
    with pytest.raises(ActionError) as raised:
        check_schema(schema)
    assert "'schema'" in str(raised.value)


def test_a_fitting_response_passes() -> None:
    validate_response("i1", APPROVAL, {"approved": False, "department_id": 7})
    validate_response("i1", DEFAULT_SCHEMA, {"continue": True})


@pytest.mark.parametrize(
    ("response", "named"),
    [
        ({"approved": "yes", "department_id": 1}, "at 'approved': 'yes' is not of type 'boolean'"),
        ({"approved": True}, "'department_id' is a required property"),
        ({"approved": True, "department_id": 1, "note": "far too long"}, "at 'note'"),
        ([True], "must be a JSON object, got an array"),
        ("yes", "must be a JSON object, got a string"),
        (None, "must be a JSON object, got null"),
    ],
)
def test_a_response_that_does_not_fit_is_refused_naming_why(response, named: str) -> None:
    with pytest.raises(InquiryError) as raised:
        validate_response("i1", APPROVAL, response)
    assert named in str(raised.value)
    assert '"i1"' in str(raised.value)


def test_a_huge_response_is_refused_before_validation() -> None:
    with pytest.raises(InquiryError) as raised:
        validate_response("i1", {"type": "object"}, {"x": "a" * MAX_RESPONSE_BYTES})
    assert "over the limit" in str(raised.value)


def test_who_may_respond() -> None:
    open_to_all = {"users": [], "roles": []}
    assert may_respond(open_to_all, "anyone", "operator") is None
    only_alice = {"users": ["alice"], "roles": []}
    assert may_respond(only_alice, "alice", "operator") is None
    assert may_respond(only_alice, "bob", "operator") == "only users 'alice' may respond"
    admins = {"users": [], "roles": ["admin"]}
    assert may_respond(admins, "root", "admin") is None
    assert may_respond(admins, "alice", "operator") == "only roles 'admin' may respond"
    both = {"users": ["alice"], "roles": ["admin"]}
    assert may_respond(both, "alice", "operator") is not None  # StackStorm: both must pass


def test_the_inquirer_runner_ends_pending_or_fails_on_a_bad_schema() -> None:
    def request(**runner_parameters) -> RunRequest:
        return RunRequest(
            execution_id="e1",
            runner_parameters=runner_parameters,
            action_parameters={},
            entry_point=None,
            parameter_positions={},
            secret_parameters=frozenset(),
            timeout=10,
            action_config={},
        )

    pending = asyncio.run(InquirerRunner().run(request(schema=APPROVAL, ttl=3)))
    assert (pending.status, pending.result["schema"], pending.result["ttl"]) == (
        "pending",
        APPROVAL,
        3,
    )
    failed = asyncio.run(InquirerRunner().run(request(schema={"type": 1})))
    assert failed.status == "failed"
    assert "not a valid JSON schema" in failed.result["error"]


# --- when a workflow pauses for its waiting tasks ------------------------------------


def settled(status: str, conductor: str, requested: int = 0, active: int = 0, asking: int = 0):
    return settled_status(status, conductor, requested, active=active, waiting=asking)


def test_a_running_workflow_whose_only_tasks_wait_pauses() -> None:
    assert settled("running", "running", active=1, asking=1) == "paused"
    assert settled("resuming", "running", active=2, asking=2) == "paused"
    assert settled("pausing", "pausing", active=1, asking=1) == "paused"


def test_an_inquiry_pauses_a_workflow_whose_other_tasks_still_run() -> None:
    # The step paused the conductor for the pending ask: `pausing` until the others end.
    assert settled("running", "pausing", active=2, asking=1) == "pausing"
    assert settled("resuming", "pausing", active=2, asking=1) == "pausing"


def test_a_workflow_with_other_work_does_not_pause() -> None:
    assert settled("running", "running", active=2, asking=1) is None
    assert settled("running", "running", requested=1, active=1, asking=1) is None
    assert settled("running", "running") is None


def test_a_paused_workflow_stays_paused_while_it_waits() -> None:
    assert settled("paused", "running", active=1, asking=1) is None


def test_a_workflow_paused_only_for_a_waiting_task_runs_on_once_it_is_done() -> None:
    # Answered while the pause was being decided: the answer found it still running.
    assert settled("paused", "running", requested=1) == "running"
    # Paused by a person (its conductor paused): it stays so.
    assert settled("paused", "paused") is None


def test_a_canceling_workflow_is_not_paused_by_what_waits() -> None:
    assert settled("canceling", "canceling", active=1, asking=1) is None
