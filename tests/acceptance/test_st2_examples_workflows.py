"""StackStorm's own `examples` pack, unchanged (tests/support/st2_examples), in a real
`hookyard serve` on a SQLite file (and on PostgreSQL): each Orquesta workflow that needs no
outside service ends with the status and result StackStorm gives.

The expectations are StackStorm's, taken from its end-to-end tests
(st2 `st2tests/integration/orquesta/test_wiring*.py`, quoted per case), not from what
Hookyard prints. A case without such a test says where its expectation comes from.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support import postgres
from tests.support.app import REPO_ROOT
from tests.support.serve import ServeLauncher, ServeProcess

pytestmark = [pytest.mark.slow]

ST2_EXAMPLES = REPO_ROOT / "tests" / "support" / "st2_examples"
ENDED = ("succeeded", "failed", "canceled", "timeout", "abandoned")
# Generous bounds for a loaded machine, not timing assertions.
WAIT = 90.0

FAILED_EXIT_1 = {
    "failed": True,
    "return_code": 1,
    "stderr": "",
    "stdout": "",
    "succeeded": False,
}
TASK1_FAILED = {
    "task_id": "task1",
    "type": "error",
    "message": "Execution failed. See result for details.",
    "result": FAILED_EXIT_1,
}
FAIL_COMMAND = {
    "task_id": "fail",
    "type": "error",
    "message": "Execution failed. See result for details.",
}
SEQUENTIAL = "Thanos, All your base are belong to us!"
LARGE = "".join("abcdefghijklmnopqrstuvwxyz"[(i * 7) % 26] for i in range(100_000))
# These workflows are run through the API, as `st2 run` runs them: their inputs are a
# person's, so a whole command passed as an input (`core.local cmd=<% ctx(cmd) %>`) runs
# as in StackStorm. Started by a trigger, the same values stay data
# (tests/integration/test_workflow_trust.py).


class Api:
    """JSON over HTTP to one server."""

    def __init__(self, server: ServeProcess) -> None:
        self.server = server
        self.url = server.url

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{method} {path}: {error.code} {error.read()!r}") from None

    def run(self, action: str, parameters: dict[str, Any]) -> dict[str, Any]:
        created = self.call(
            "POST", "/api/v1/executions", {"action": action, "parameters": parameters}
        )
        return self.run_until_ended(created["id"])

    def run_until_ended(self, execution_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while True:
            execution = self.call("GET", f"/api/v1/executions/{execution_id}")
            if execution["status"] in ENDED:
                return execution
            assert time.monotonic() < deadline, f"{execution_id} still {execution['status']}"
            time.sleep(0.05)

    def children(self, execution_id: str) -> list[dict[str, Any]]:
        return self.call("GET", f"/api/v1/executions?parent={execution_id}")

    def task_runs(self, execution_id: str, task: str) -> list[dict[str, Any]]:
        runs = [
            child
            for child in self.children(execution_id)
            if child["context"]["orquesta"]["task_name"] == task
        ]
        return sorted(runs, key=lambda child: child["start_timestamp"])


@dataclass(frozen=True)
class Case:
    action: str
    parameters: dict[str, Any] = field(default_factory=dict)
    status: str = "succeeded"
    #: The whole result StackStorm gives, or a check of the execution (for results with
    #: ids, random values or children in them).
    result: dict[str, Any] | None = None
    check: Callable[[Api, dict[str, Any]], None] | None = None


def _callback_is_this_execution(api: Api, execution: dict[str, Any]) -> None:
    # test_wiring.py test_st2_runtime_context: "<api_url>/executions/<id>" (its api_url is
    # http://127.0.0.1:9101/v1; ours is this server's /api/v1).
    callback = f"{api.url}/api/v1/executions/{execution['id']}"
    assert execution["result"] == {"output": {"callback": callback}}


def _subworkflow_ran_every_task(api: Api, execution: dict[str, Any]) -> None:
    # test_wiring.py test_subworkflow: start, subworkflow (task1..3 inside), finish.
    assert execution["result"] == {"output": None}
    for task in ("start", "subworkflow", "finish"):
        assert [run["status"] for run in api.task_runs(execution["id"], task)] == ["succeeded"]
    inner = api.task_runs(execution["id"], "subworkflow")[0]
    assert inner["result"] == {"output": {"greeting": "Lakshmi, All your base are belong to us!"}}
    for task in ("task1", "task2", "task3"):
        assert [run["status"] for run in api.task_runs(inner["id"], task)] == ["succeeded"]
    # The tree depth first, as StackStorm lists it (the st2 CLI indents it as it comes).
    tree = api.call("GET", f"/api/v1/executions/{execution['id']}/children?depth=-1")
    names = [run["context"]["orquesta"]["task_name"] for run in tree]
    assert names == ["start", "subworkflow", "task1", "task2", "task3", "finish"]


def _retried_until_the_file_appeared(api: Api, execution: dict[str, Any]) -> None:
    # test_wiring_task_retry.py test_task_retry: more than one run of "check".
    assert execution["result"] == {"output": None}
    checks = api.task_runs(execution["id"], "check")
    assert len(checks) > 1 and checks[-1]["status"] == "succeeded"
    assert all(run["status"] == "failed" for run in checks[:-1])


def _retries_exhausted(api: Api, execution: dict[str, Any]) -> None:
    # test_wiring_task_retry.py test_task_retry_exhausted: "check" failed 3 times, no delete.
    assert [run["status"] for run in api.task_runs(execution["id"], "check")] == ["failed"] * 3
    assert api.task_runs(execution["id"], "delete") == []
    errors = execution["result"]["errors"]
    assert {error["task_id"] for error in errors} == {"check"}
    assert execution["result"]["output"] is None


def _rolled_back_until_the_file_appeared(api: Api, execution: dict[str, Any]) -> None:
    # test_wiring.py test_cycle: succeeded, {"output": None}; the loop ran rollback.
    assert execution["result"] == {"output": None}
    assert api.task_runs(execution["id"], "rollback")
    assert [run["status"] for run in api.task_runs(execution["id"], "delete")] == ["succeeded"]


def _remediated_then_failed(api: Api, execution: dict[str, Any]) -> None:
    # test_wiring_error_handling.py test_remediate_then_fail: task1 failed, log succeeded.
    assert execution["result"] == {"errors": [TASK1_FAILED, FAIL_COMMAND], "output": None}
    assert [run["status"] for run in api.task_runs(execution["id"], "task1")] == ["failed"]
    assert [run["status"] for run in api.task_runs(execution["id"], "log")] == ["succeeded"]


def _vm_created(api: Api, execution: dict[str, Any]) -> None:
    # No StackStorm test: the workflow's own output, as Orquesta merges the branches' contexts
    # (vm_id and extra from create_vm, whose mock returns {"vm_id": "vm<n>", ip: {...}}).
    output = execution["result"]["output"]
    assert re.fullmatch(r"vm\d+", output["vm_id"]), output
    assert output["ip"] == "10.1.23.99"
    assert output["extra"] == {
        "vm_id": output["vm_id"],
        "10.1.23.99": {"cpu_cores": 1, "memory_mb": 1024, "vm_name": "vm1"},
    }
    statuses = {child["status"] for child in api.children(execution["id"])}
    assert statuses == {"succeeded"}


def _every_item_ran(api: Api, execution: dict[str, Any]) -> None:
    # test_wiring_with_items.py test_with_items_failure: ten runs of task1, odd ones failed.
    runs = api.task_runs(execution["id"], "task1")
    by_item = {run["context"]["orquesta"]["item_id"]: run["status"] for run in runs}
    assert by_item == {i: "failed" if i % 2 else "succeeded" for i in range(10)}


def _ran_basic_sequential_and_data_flow(api: Api, execution: dict[str, Any]) -> None:
    # No StackStorm test: three subworkflows, each succeeding; no output.
    assert execution["result"] == {"output": None}
    for task in ("basic", "sequential", "dataFlow"):
        assert [run["status"] for run in api.task_runs(execution["id"], task)] == ["succeeded"]


TASK_FUNCTIONS = {
    "output": {
        "last_task4_result": "False",
        "task9__1__parent": "task8__1",
        "task9__2__parent": "task8__2",
        "that_task_by_name": "task1",
        "this_task_by_name": "task1",
        "this_task_no_arg": "task1",
    }
}
DATA_FUNCTIONS = {
    "data_json_str_1": '{"foo": {"bar": "foobar"}}',
    "data_json_str_2": '{"foo": {"bar": "foobar"}}',
    "data_json_str_3": '{"foo": {"bar": "foobar"}}',
    "data_json_obj_1": {"foo": {"bar": "foobar"}},
    "data_json_obj_2": {"foo": {"bar": "foobar"}},
    "data_json_obj_3": {"foo": {"bar": "foobar"}},
    "data_json_obj_4": {"foo": {"bar": "foobar"}},
    "data_yaml_str_1": "foo:\n  bar: foobar\n",
    "data_yaml_str_2": "foo:\n  bar: foobar\n",
    "data_query_1": ["foobar"],
    "data_none_str": "%*****__%NONE%__*****%",
    "data_str": "foobar",
}
VERSION_FUNCTIONS = {
    "compare_equal": 0,
    "compare_more_than": -1,
    "compare_less_than": 1,
    "equal": True,
    "more_than": False,
    "less_than": False,
    "match": True,
    "bump_major": "1.0.0",
    "bump_minor": "0.11.0",
    "bump_patch": "0.10.1",
    "strip_patch": "0.10",
}
REGEX_FUNCTIONS = {"match": True, "replace": "wxyz", "search": True, "substring": "668 Infinite Dr"}


def _abs_value_failed() -> dict[str, Any]:
    # test_wiring_error_handling.py test_{input,vars,output}_error
    message = (
        "YaqlEvaluationException: Unable to evaluate expression "
        "'<% abs(8).value %>'. NoFunctionRegisteredException: "
        'Unknown function "#property#value"'
    )
    return {"errors": [{"type": "error", "message": message}], "output": None}


def _transition_failed(expression: str) -> dict[str, Any]:
    # test_wiring_error_handling.py test_task_{transition,publish}_error
    message = (
        "YaqlEvaluationException: Unable to resolve key 'value' "
        f"in expression '{expression}' from context."
    )
    return {
        "errors": [
            {
                "type": "error",
                "message": message,
                "task_transition_id": "task2__t0",
                "task_id": "task1",
                "route": 0,
            }
        ],
        "output": {"greeting": None},
    }


def _task_missing(language: str, expression: str) -> dict[str, Any]:
    # test_wiring_functions_task.py test_task_nonexistent_in_{yaql,jinja}
    return {
        "output": None,
        "errors": [
            {
                "type": "error",
                "message": (
                    f"{language}EvaluationException: Unable to evaluate expression "
                    f"'{expression}'. ExpressionEvaluationException: "
                    'Unable to find task execution for "task0".'
                ),
                "task_transition_id": "continue__t0",
                "task_id": "task1",
                "route": 0,
            }
        ],
    }


CASES: dict[str, Any] = {
    # test_wiring.py
    "sequential": Case(
        "examples.orquesta-sequential",
        {"name": "Thanos"},
        result={"output": {"greeting": SEQUENTIAL}},
    ),
    "join": Case(
        "examples.orquesta-join",
        result={
            "output": {
                "messages": [
                    "Fee fi fo fum",
                    "I smell the blood of an English man",
                    "Be alive, or be he dead",
                    "I'll grind his bones to make my bread",
                ]
            }
        },
    ),
    "rollback-retry": Case(
        "examples.orquesta-rollback-retry", check=_rolled_back_until_the_file_appeared
    ),
    "action-less-tasks": Case(
        "examples.orquesta-test-action-less-tasks",
        {"name": "Thanos"},
        result={"output": {"greeting": SEQUENTIAL.upper()}},
    ),
    "st2-ctx": Case("examples.orquesta-st2-ctx", check=_callback_is_this_execution),
    "subworkflow": Case("examples.orquesta-subworkflow", check=_subworkflow_ran_every_task),
    "output-on-error": Case(
        "examples.orquesta-output-on-error",
        status="failed",
        result={"errors": [{**TASK1_FAILED, "task_id": "task2"}], "output": {"progress": 25}},
    ),
    "render_config_context": Case(
        "examples.render_config_context", result={"output": {"context_value": "Testing"}}
    ),
    "field-escaping": Case(
        "examples.orquesta-test-field-escaping",
        result={
            "output": {
                "wf.hostname.with.periods": {
                    "hostname.domain.tld": "vars.value.with.periods",
                    "hostname2.domain.tld": {"stdout": "vars.nested.value.with.periods"},
                },
                "wf.output.with.periods": "vars.nested.value.with.periods",
            }
        },
    ),
    # test_wiring_data_flow.py
    "data-flow": Case(
        "examples.orquesta-data-flow",
        {"a1": "fee fi fo fum"},
        result={"output": {"a5": "fee fi fo fum", "b5": "fee fi fo fum"}},
    ),
    "data-flow-unicode": Case(
        "examples.orquesta-data-flow",
        {"a1": "床前明月光 疑是地上霜 舉頭望明月 低頭思故鄉"},
        result={
            "output": {
                "a5": "床前明月光 疑是地上霜 舉頭望明月 低頭思故鄉",
                "b5": "床前明月光 疑是地上霜 舉頭望明月 低頭思故鄉",
            }
        },
    ),
    "sequential-unicode": Case(
        "examples.orquesta-sequential",
        {"name": "薩諾斯"},
        result={"output": {"greeting": "薩諾斯, All your base are belong to us!"}},
    ),
    "data-flow-big-data": Case(
        "examples.orquesta-data-flow", {"a1": LARGE}, result={"output": {"a5": LARGE, "b5": LARGE}}
    ),
    # No StackStorm test: it calls examples.load_and_print_fixture, which the pack registers
    # as python_runner_load_and_print_fixture, so StackStorm's inspection of the task
    # contents (st2common/services/workflows.py) fails it before any task runs.
    "data-flow-large-data": Case(
        "examples.orquesta-data-flow-large-data",
        {"file_path": str(ST2_EXAMPLES / "examples" / "pack.yaml")},
        status="failed",
        result={
            "errors": [
                {
                    "type": "content",
                    "message": (
                        'The action "examples.load_and_print_fixture" is not registered '
                        "in the database."
                    ),
                    "schema_path": r"properties.tasks.patternProperties.^\w+$.properties.action",
                    "spec_path": "tasks.task2.action",
                }
            ],
            "output": None,
        },
    ),
    # test_wiring_delay.py
    "delay": Case(
        "examples.orquesta-delay",
        {"name": "Thanos", "delay": 1},
        result={"output": {"greeting": SEQUENTIAL}},
    ),
    # test_wiring_with_items.py
    "with-items": Case(
        "examples.orquesta-with-items",
        {"members": ["Lakshmi", "Lindsay", "Tomaz", "Matt", "Drew"]},
        result={
            "output": {
                "items": [
                    f"{name}, resistance is futile!"
                    for name in ("Lakshmi", "Lindsay", "Tomaz", "Matt", "Drew")
                ]
            }
        },
    ),
    # No StackStorm test for this one: the same output as with-items, two at a time.
    "with-items-concurrency": Case(
        "examples.orquesta-with-items-concurrency",
        {"members": ["Lakshmi", "Lindsay", "Tomaz", "Matt", "Drew"]},
        result={
            "output": {
                "items": [
                    f"{name}, resistance is futile!"
                    for name in ("Lakshmi", "Lindsay", "Tomaz", "Matt", "Drew")
                ]
            }
        },
    ),
    "subworkflow-empty-with-items": Case(
        "examples.orquesta-test-subworkflow-empty-with-items", result={"output": None}
    ),
    "with-items-failure": pytest.param(
        Case("examples.orquesta-test-with-items-failure", status="failed", check=_every_item_ran),
    ),
    # test_wiring_task_retry.py
    "task-retry": Case("examples.orquesta-task-retry", check=_retried_until_the_file_appeared),
    "task-retry-exhausted": Case(
        "examples.orquesta-task-retry-exhausted", status="failed", check=_retries_exhausted
    ),
    # test_wiring_error_handling.py
    "remediate-then-fail": Case(
        "examples.orquesta-remediate-then-fail", status="failed", check=_remediated_then_failed
    ),
    # The same workflow as remediate-then-fail under another name: the same result.
    "fail-manually": Case(
        "examples.orquesta-fail-manually", status="failed", check=_remediated_then_failed
    ),
    "error-handling-fail-manually": pytest.param(
        Case(
            "examples.orquesta-error-handling-fail-manually",
            {"cmd": "exit 1"},
            status="failed",
            result={"errors": [TASK1_FAILED, FAIL_COMMAND], "output": {"message": "$%#&@#$!!!"}},
        ),
    ),
    "error-handling-continue": pytest.param(
        Case(
            "examples.orquesta-error-handling-continue",
            {"cmd": "exit 1"},
            status="failed",
            result={"errors": [TASK1_FAILED], "output": {"message": "$%#&@#$!!!"}},
        ),
    ),
    "error-handling-noop": pytest.param(
        Case(
            "examples.orquesta-error-handling-noop",
            {"cmd": "exit 1"},
            result={"output": {"message": "$%#&@#$!!!"}},
        ),
    ),
    "basic": pytest.param(
        Case(
            "examples.orquesta-basic", {"cmd": "echo hello"}, result={"output": {"stdout": "hello"}}
        ),
    ),
    "examples": pytest.param(
        Case("examples.orquesta-examples", check=_ran_basic_sequential_and_data_flow),
    ),
    "fail-task-contents": Case(
        "examples.orquesta-fail-inspection-task-contents",
        status="failed",
        result={
            "errors": [
                {
                    "type": "content",
                    "message": 'The action reference "echo" is not formatted correctly.',
                    "schema_path": r"properties.tasks.patternProperties.^\w+$.properties.action",
                    "spec_path": "tasks.task1.action",
                },
                {
                    "type": "content",
                    "message": 'The action "core.echoz" is not registered in the database.',
                    "schema_path": r"properties.tasks.patternProperties.^\w+$.properties.action",
                    "spec_path": "tasks.task2.action",
                },
                {
                    "type": "content",
                    "message": 'Action "core.echo" is missing required input "message".',
                    "schema_path": r"properties.tasks.patternProperties.^\w+$.properties.input",
                    "spec_path": "tasks.task3.input",
                },
                {
                    "type": "content",
                    "message": 'Action "core.echo" has unexpected input "messages".',
                    "schema_path": (
                        r"properties.tasks.patternProperties.^\w+$.properties.input.patternProperties.^\w+$"
                    ),
                    "spec_path": "tasks.task3.input.messages",
                },
            ],
            "output": None,
        },
    ),
    "fail-input-rendering": Case(
        "examples.orquesta-fail-input-rendering", status="failed", result=_abs_value_failed()
    ),
    "fail-vars-rendering": Case(
        "examples.orquesta-fail-vars-rendering", status="failed", result=_abs_value_failed()
    ),
    "fail-output-rendering": Case(
        "examples.orquesta-fail-output-rendering", status="failed", result=_abs_value_failed()
    ),
    "fail-start-task": Case(
        "examples.orquesta-fail-start-task",
        status="failed",
        result={
            "errors": [
                {
                    "type": "error",
                    "message": (
                        "YaqlEvaluationException: Unable to evaluate expression "
                        "'<% ctx().name.value %>'. NoFunctionRegisteredException: "
                        'Unknown function "#property#value"'
                    ),
                    "task_id": "task1",
                    "route": 0,
                },
                {
                    "type": "error",
                    "message": (
                        "YaqlEvaluationException: Unable to resolve key 'greeting' "
                        "in expression '<% ctx().greeting %>' from context."
                    ),
                },
            ],
            "output": None,
        },
    ),
    "fail-task-transition": Case(
        "examples.orquesta-fail-task-transition",
        status="failed",
        result=_transition_failed("<% succeeded() and result().value %>"),
    ),
    "fail-task-publish": Case(
        "examples.orquesta-fail-task-publish",
        status="failed",
        result=_transition_failed("<% result().value %>"),
    ),
    # test_wiring_functions_st2kv.py (the keys are set by the st2kv fixture below)
    "st2kv-system": Case(
        "examples.orquesta-st2kv",
        {"key_name": "system.lakshmi"},
        result={"output": {"value": "kanahansnasnasdlsajks"}},
    ),
    "st2kv-user": Case(
        "examples.orquesta-st2kv",
        {"key_name": "winson"},
        result={"output": {"value": "SoDiamondEng"}},
    ),
    "st2kv-decrypt": Case(
        "examples.orquesta-st2kv",
        {"key_name": "system.kami", "decrypt": True},
        result={"output": {"value": "eggplant"}},
    ),
    "st2kv-default": Case(
        "examples.orquesta-st2kv-default",
        {"key_name": "system.matt", "decrypt": True, "default": "stone"},
        result={"output": {"value_from_yaql": "stone", "value_from_jinja": "stone"}},
    ),
    "st2kv-default-empty": Case(
        "examples.orquesta-st2kv-default",
        {"key_name": "system.matt", "decrypt": True, "default": ""},
        result={"output": {"value_from_yaql": "", "value_from_jinja": ""}},
    ),
    "st2kv-default-null": Case(
        "examples.orquesta-st2kv-default",
        {"key_name": "system.matt", "decrypt": True, "default": None},
        result={"output": {"value_from_yaql": None, "value_from_jinja": None}},
    ),
    # test_wiring_functions_task.py
    "yaql-task-functions": Case(
        "examples.orquesta-test-yaql-task-functions", result=TASK_FUNCTIONS
    ),
    "jinja-task-functions": Case(
        "examples.orquesta-test-jinja-task-functions", result=TASK_FUNCTIONS
    ),
    "yaql-task-nonexistent": Case(
        "examples.orquesta-test-yaql-task-nonexistent",
        status="failed",
        result=_task_missing("Yaql", '<% task("task0") %>'),
    ),
    "jinja-task-nonexistent": Case(
        "examples.orquesta-test-jinja-task-nonexistent",
        status="failed",
        result=_task_missing("Jinja", '{{ task("task0") }}'),
    ),
    # test_wiring_functions.py
    "yaql-data-functions": Case(
        "examples.orquesta-test-yaql-data-functions", result={"output": DATA_FUNCTIONS}
    ),
    "jinja-data-functions": Case(
        "examples.orquesta-test-jinja-data-functions",
        result={
            "output": {
                **DATA_FUNCTIONS,
                "data_pipe_str_1": '{"foo": {"bar": "foobar"}}',
                "data_list_str": "- a: 1\n  b: 2\n- x: 3\n  y: 4\n",
            }
        },
    ),
    "yaql-path-functions": Case(
        "examples.orquesta-test-yaql-path-functions",
        result={"output": {"basename": "file.txt", "dirname": "/path/to/some"}},
    ),
    "jinja-path-functions": Case(
        "examples.orquesta-test-jinja-path-functions",
        result={"output": {"basename": "file.txt", "dirname": "/path/to/some"}},
    ),
    "yaql-regex-functions": Case(
        "examples.orquesta-test-yaql-regex-functions", result={"output": REGEX_FUNCTIONS}
    ),
    "jinja-regex-functions": Case(
        "examples.orquesta-test-jinja-regex-functions", result={"output": REGEX_FUNCTIONS}
    ),
    "yaql-time-functions": Case(
        "examples.orquesta-test-yaql-time-functions", result={"output": {"time": "3h25m45s"}}
    ),
    "jinja-time-functions": Case(
        "examples.orquesta-test-jinja-time-functions", result={"output": {"time": "3h25m45s"}}
    ),
    "yaql-version-functions": Case(
        "examples.orquesta-test-yaql-version-functions", result={"output": VERSION_FUNCTIONS}
    ),
    "jinja-version-functions": Case(
        "examples.orquesta-test-jinja-version-functions", result={"output": VERSION_FUNCTIONS}
    ),
    # No StackStorm test: forks and joins around a mocked VM creation (a Python action).
    "mock-create-vm": Case(
        "examples.orquesta-mock-create-vm", {"vm_name": "vm1"}, check=_vm_created
    ),
}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def store(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[str]:
    """A SQLite file, or a fresh PostgreSQL database (skipped without HOOKYARD_TEST_PG)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('examples') / 'hookyard.db'}"
        return
    server = postgres.server_url()
    name = f"hookyard_examples_{uuid.uuid4().hex[:12]}"
    asyncio.run(postgres.admin(server, f'CREATE DATABASE "{name}"'))
    try:
        yield postgres.database_url(server, name)
    finally:
        asyncio.run(postgres.admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def api(module_serve: ServeLauncher, store: str) -> Iterator[Api]:
    server = module_serve.start(
        store=store,
        roles="api,actions,workflows",
        env={"HOOKYARD_PACKS_DIRS": f"[{ST2_EXAMPLES}]"},
    )
    api = Api(server)
    # test_wiring_functions_st2kv.py's keys.
    api.call("PUT", "/api/v1/keys/lakshmi", {"name": "lakshmi", "value": "kanahansnasnasdlsajks"})
    api.call("PUT", "/api/v1/keys/kami", {"name": "kami", "value": "eggplant", "secret": True})
    # The user scope of the user an execution runs as with auth off ("api").
    user_key = {"name": "winson", "value": "SoDiamondEng", "scope": "user", "user": "api"}
    api.call("PUT", "/api/v1/keys/winson?scope=user", user_key)
    yield api


def test_the_unchanged_pack_loads_every_workflow_it_ships(api: Api) -> None:
    refs = {action["ref"] for action in api.call("GET", "/api/v1/actions?pack=examples&limit=500")}
    assert {"examples.orquesta-sequential", "examples.orquesta-mock-create-vm"} <= refs
    workflows = {ref for ref in refs if ref.startswith("examples.orquesta-")}
    assert len(workflows) >= 60, sorted(workflows)


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_an_examples_workflow_ends_as_in_stackstorm(api: Api, case: Case) -> None:
    execution = api.run(case.action, case.parameters)
    assert execution["status"] == case.status, execution["result"]
    if case.result is not None:
        assert execution["result"] == case.result
    if case.check is not None:
        case.check(api, execution)


def test_a_missing_key_fails_st2kv_in_stackstorms_words(api: Api) -> None:
    # test_wiring_functions_st2kv.py test_st2kv_nonexistent
    execution = api.run("examples.orquesta-st2kv", {"key_name": "system.matt", "decrypt": True})
    assert execution["status"] == "failed"
    message = execution["result"]["errors"][0]["message"]
    assert 'The key "matt" does not exist in the StackStorm datastore.' in message


def test_with_items_runs_at_most_concurrency_items_at_once(api: Api, tmp_path) -> None:
    # test_wiring_with_items.py test_with_items_concurrency: each item waits while its file
    # exists; five files, two at a time.
    files = [tmp_path / f"item{n}" for n in range(5)]
    for path in files:
        path.write_text("")
    body = {
        "action": "examples.orquesta-test-with-items",
        "parameters": {"tempfiles": [str(path) for path in files], "concurrency": 2},
    }
    workflow_id = api.call("POST", "/api/v1/executions", body)["id"]

    def runs_reach(count: int) -> None:
        deadline = time.monotonic() + WAIT
        while len(api.task_runs(workflow_id, "task1")) < count:
            assert time.monotonic() < deadline, f"fewer than {count} items ever started"
            time.sleep(0.05)
        time.sleep(0.5)  # a third item would start now if the concurrency were not kept
        assert len(api.task_runs(workflow_id, "task1")) == count

    for started, done in ((2, files[:2]), (4, files[2:4]), (5, files[4:])):
        runs_reach(started)
        for path in done:
            path.unlink()
    workflow = api.run_until_ended(workflow_id)
    assert workflow["status"] == "succeeded", workflow["result"]
    assert workflow["result"] == {"output": None}


def test_a_task_waiting_out_its_delay_is_delayed(api: Api) -> None:
    # test_wiring_delay.py waits for task1 "delayed" (StackStorm's status while it waits).
    body = {"action": "examples.orquesta-delay", "parameters": {"name": "Thanos", "delay": 4}}
    workflow_id = api.call("POST", "/api/v1/executions", body)["id"]
    deadline = time.monotonic() + WAIT
    while not (runs := api.task_runs(workflow_id, "task1")):
        assert time.monotonic() < deadline, "task1 was never requested"
        time.sleep(0.05)
    assert runs[0]["status"] == "delayed"
    assert api.call("GET", f"/api/v1/executions/{runs[0]['id']}")["status"] == "delayed"
    workflow = api.run_until_ended(workflow_id)
    assert workflow["result"] == {"output": {"greeting": SEQUENTIAL}}
    assert [run["status"] for run in api.task_runs(workflow_id, "task1")] == ["succeeded"]


@pytest.mark.parametrize("canceled", ["workflow", "task"])
def test_canceling_a_delayed_task_or_its_workflow_cancels_both(api: Api, canceled: str) -> None:
    # test_wiring_delay.py test_task_delay_{workflow,task}_cancellation: task1 delayed 300 s.
    body = {"action": "examples.orquesta-delay", "parameters": {"name": "Thanos", "delay": 300}}
    workflow_id = api.call("POST", "/api/v1/executions", body)["id"]
    deadline = time.monotonic() + WAIT
    while not (runs := api.task_runs(workflow_id, "task1")):
        assert time.monotonic() < deadline, "task1 was never requested"
        time.sleep(0.05)
    assert runs[0]["status"] == "delayed"
    api.call(
        "DELETE", f"/api/v1/executions/{workflow_id if canceled == 'workflow' else runs[0]['id']}"
    )
    workflow = api.run_until_ended(workflow_id)
    assert workflow["status"] == "canceled"
    assert [run["status"] for run in api.task_runs(workflow_id, "task1")] == ["canceled"]


@pytest.mark.xfail(
    strict=True,
    reason="Hookyard's cancel stops a workflow's running actions; StackStorm's orquesta "
    "runner (task_cancelable) cancels only subworkflows and delayed actions and lets "
    "running ones finish",
)
def test_canceling_lets_running_items_finish(api: Api, tmp_path) -> None:
    # test_wiring_with_items.py test_with_items_cancellation: the workflow is canceling
    # while its two items run, the items succeed once their files are gone, then canceled.
    files = [tmp_path / f"wait{n}" for n in range(2)]
    for path in files:
        path.write_text("")
    body = {
        "action": "examples.orquesta-test-with-items",
        "parameters": {"tempfiles": [str(path) for path in files], "concurrency": 2},
    }
    workflow_id = api.call("POST", "/api/v1/executions", body)["id"]
    deadline = time.monotonic() + WAIT
    while [run["status"] for run in api.task_runs(workflow_id, "task1")] != ["running"] * 2:
        assert time.monotonic() < deadline, "the two items never ran"
        time.sleep(0.05)
    api.call("DELETE", f"/api/v1/executions/{workflow_id}")
    try:
        assert api.call("GET", f"/api/v1/executions/{workflow_id}")["status"] == "canceling"
    finally:
        for path in files:
            path.unlink()
    workflow = api.run_until_ended(workflow_id)
    assert workflow["status"] == "canceled"
    assert [run["status"] for run in api.task_runs(workflow_id, "task1")] == ["succeeded"] * 2
