"""engine.workflows.contents: the tasks' actions and inputs checked against what the
registered actions take, before a workflow runs — StackStorm's own fixture and the errors
its integration tests expect (st2tests/integration/orquesta/test_wiring_error_handling.py)."""

from __future__ import annotations

import textwrap

from engine.workflows.contents import ActionInputs, content_errors
from engine.workflows.spec import parse_workflow
from tests.support.app import REPO_ROOT

EXAMPLES = REPO_ROOT / "tests" / "support" / "st2_examples" / "examples" / "actions"
ACTIONS = {
    "core.echo": ActionInputs(frozenset({"message", "cmd", "env", "timeout"}), ("message",)),
    "core.noop": ActionInputs(frozenset(), ()),
}
TASK = r"properties.tasks.patternProperties.^\w+$"


def test_stackstorms_task_contents_fixture_gives_stackstorms_errors() -> None:
    path = EXAMPLES / "workflows" / "tests" / "orquesta-fail-inspection-task-contents.yaml"
    spec = parse_workflow(path.read_text(), str(path))
    assert content_errors(spec, ACTIONS.get) == [
        {
            "type": "content",
            "message": 'The action reference "echo" is not formatted correctly.',
            "schema_path": TASK + ".properties.action",
            "spec_path": "tasks.task1.action",
        },
        {
            "type": "content",
            "message": 'The action "core.echoz" is not registered in the database.',
            "schema_path": TASK + ".properties.action",
            "spec_path": "tasks.task2.action",
        },
        {
            "type": "content",
            "message": 'Action "core.echo" is missing required input "message".',
            "schema_path": TASK + ".properties.input",
            "spec_path": "tasks.task3.input",
        },
        {
            "type": "content",
            "message": 'Action "core.echo" has unexpected input "messages".',
            "schema_path": TASK + r".properties.input.patternProperties.^\w+$",
            "spec_path": "tasks.task3.input.messages",
        },
    ]


def test_dynamic_actions_action_less_tasks_and_one_expression_inputs_wait_for_run_time():
    spec = parse_workflow(
        textwrap.dedent(
            """\
            version: 1.0
            input: [which, args]
            tasks:
              dynamic:
                action: <% ctx(which) %>
                input: {anything: 1}
                next: [{do: whole}]
              whole:
                action: core.echo
                input: <% ctx(args) %>
                next: [{do: publisher}]
              publisher:
                next: [{publish: [x: 1]}]
              fine:
                action: core.echo message=hi
            """
        ),
        "wf.yaml",
    )
    assert content_errors(spec, ACTIONS.get) == []
