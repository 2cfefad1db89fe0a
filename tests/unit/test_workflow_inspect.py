"""engine.workflows.inspect and `hookyard workflow inspect`: every problem at once, located."""

from __future__ import annotations

import textwrap

from engine.workflows.inspect import inspect_workflow
from tests.support.workflows import FAIL_INSPECTION

# StackStorm's own fixture for `st2 workflow inspect` (orquesta-fail-inspection.yaml);
# tests/acceptance/test_cli_workflow.py runs it through the CLI.
# a list where input needs a mapping, a nested <%, and a ctx name nothing sets.


def test_stackstorms_fail_inspection_fixture_reports_all_three_problems():
    problems = inspect_workflow(FAIL_INSPECTION, "wf.yaml")
    assert [str(p) for p in problems] == [
        "wf.yaml:18:9: tasks.task2.input: must be a mapping of input names, not a list",
        "wf.yaml:20:15: tasks.task2.next[0].when: YAQL syntax error in <% <% succeeded() %>: "
        "<% inside <%",
        "wf.yaml:10:13: tasks.task1.input.cmd: ctx(foobar) is read but 'foobar' is never set "
        "(not in input, vars, publish or output)",
    ]
    assert [p.kind for p in problems] == ["syntax", "expression", "context"]


def test_unreachable_tasks_and_expressions_everywhere():
    text = textwrap.dedent(
        """\
        version: 1.0
        input:
          - a
          - b: <% ctx(a) + %>
        vars:
          - v: "{{ ctx('a') }"
        tasks:
          start:
            action: core.noop
            input:
              x: "{{ ctx('never') }}"
            next:
              - publish: p=<% result() %>
          island:
            next: [{do: other}]
          other:
            next: [{do: island}]
          self_only:
            with: x in <% ctx(list) %>
            action: core.noop
            next: [{do: self_only}]
        output:
          - out: <% ctx(p) %> <% ctx(out2) %>
          - out2: <% ctx(island_value) %>
        """
    )
    problems = [str(p) for p in inspect_workflow(text, "wf.yaml")]
    assert problems == [
        "wf.yaml:4:8: input.b: YAQL syntax error in <% ctx(a) + %>: Parse error: unexpected "
        "end of statement",
        "wf.yaml:6:8: vars.v: Jinja template syntax error on line 1: unexpected '}' in "
        "\"{{ ctx('a') }\"",
        "wf.yaml:14:3: tasks.island: task 'island' is never reached from the start tasks "
        "(start, self_only)",
        "wf.yaml:16:3: tasks.other: task 'other' is never reached from the start tasks "
        "(start, self_only)",
        "wf.yaml:11:10: tasks.start.input.x: ctx(never) is read but 'never' is never set "
        "(not in input, vars, publish or output)",
        "wf.yaml:19:11: tasks.self_only.with.items: ctx(list) is read but 'list' is never set "
        "(not in input, vars, publish or output)",
        "wf.yaml:24:11: output.out2: ctx(island_value) is read but 'island_value' is never "
        "set (not in input, vars, publish or output)",
    ]


def test_a_clean_workflow_has_no_problems():
    text = "version: 1.0\ninput: [a]\ntasks:\n  t:\n    action: core.echo message=<% ctx(a) %>\n"
    assert inspect_workflow(text, "wf.yaml") == []
    assert (
        inspect_workflow(
            "version: 1.0\ntasks:\n  t:\n    action: core.echo message=<% ctx(st2).user %>\n"
        )
        == []
    )


def test_a_yaml_bomb_is_one_located_problem():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join(['*a' if i == 1 else f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)
    )
    problems = inspect_workflow(bomb, "bomb.yaml")
    assert len(problems) == 1 and "alias bomb" in str(problems[0])
    assert str(problems[0]).startswith("bomb.yaml:")
