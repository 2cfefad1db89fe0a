"""engine.workflows.spec: Orquesta definitions read into records, every problem located."""

from __future__ import annotations

import textwrap
import time

import pytest

from engine.errors import WorkflowSpecError
from engine.workflows.inline import parse_inline
from engine.workflows.spec import ItemsSpec, RetrySpec, Transition, parse_workflow


def parse(text: str):
    return parse_workflow(textwrap.dedent(text), "wf.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(WorkflowSpecError) as caught:
        parse(text)
    return [str(problem) for problem in caught.value.problems]


FULL = """\
    version: 1.0
    description: every construct
    input:
      - name
      - greeting: hello
    vars:
      - count: 0
    tasks:
      start:
        action: core.echo message="<% ctx(name) %>" n=3 flag=True items=[1, 2]
        next:
          - when: <% succeeded() %>
            publish:
              - out: <% result().stdout %>
            do: fan, other
          - when: <% failed() %>
            publish: a=<% result() %> b=1
            do: [fail]
      fan:
        action: core.local
        input:
          cmd: echo {{ item() }}
        with:
          items: <% ctx(list) %>
          concurrency: 2
        retry:
          when: <% failed() %>
          count: 3
          delay: 1
        delay: 5
        next:
          - do: joined
      other:
        with: x, y in <% zip(ctx(a), ctx(b)) %>
        action: core.noop
        next:
          - publish: {z: 1}
            do: joined
      joined:
        join: all
        next:
          - do: noop
    output:
      - result: <% ctx(out) %>
"""


def test_every_construct_is_read():
    spec = parse(FULL)
    assert spec.version == "1.0" and spec.description == "every construct"
    assert spec.input == (("name", None, False), ("greeting", "hello", True))
    assert spec.vars == (("count", 0),)
    assert list(spec.tasks) == ["start", "fan", "other", "joined"]
    start = spec.tasks["start"]
    assert start.action == "core.echo"
    assert start.input == {"message": "<% ctx(name) %>", "n": 3, "flag": True, "items": [1, 2]}
    assert start.next[0] == Transition(
        when="<% succeeded() %>", publish=(("out", "<% result().stdout %>"),), do=("fan", "other")
    )
    assert start.next[1].publish == (("a", "<% result() %>"), ("b", 1))
    assert start.next[1].do == ("fail",)
    fan = spec.tasks["fan"]
    assert fan.with_items == ItemsSpec("<% ctx(list) %>", (), 2)
    assert fan.retry == RetrySpec("<% failed() %>", 3, 1)
    assert fan.delay == 5 and fan.input == {"cmd": "echo {{ item() }}"}
    assert spec.tasks["other"].with_items == ItemsSpec(
        "<% zip(ctx(a), ctx(b)) %>", ("x", "y"), None
    )
    assert spec.tasks["other"].next[0].do == ("joined",)
    assert spec.tasks["joined"].join == "all" and spec.tasks["joined"].action is None
    assert spec.output == (("result", "<% ctx(out) %>"),)
    assert spec.start_tasks() == ["start"]
    assert spec.inbound("joined") == [("fan", 0), ("other", 0)]
    assert spec.locations["tasks.fan.with.items"] == (24, 14)


def test_defaults_mappings_and_empty_tasks():
    spec = parse(
        """\
        version: '1.0'
        input: {a: 1}
        output: {b: <% ctx(a) %>}
        tasks:
          only:
        """
    )
    assert spec.input == (("a", 1, True),)
    assert spec.output == (("b", "<% ctx(a) %>"),)
    assert spec.tasks["only"].action is None and spec.tasks["only"].next == ()


def test_a_transition_without_do_continues():
    spec = parse(
        """\
        version: 1.0
        tasks:
          t:
            action: core.noop
            next:
              - publish: [{x: 1}]
        """
    )
    assert spec.tasks["t"].next[0].do == ("continue",)


def test_every_problem_is_reported_with_file_line_and_field():
    found = problems(
        """\
        version: 2.0
        colour: blue
        tasks:
          t1:
            action: core.noop
            acton: typo
            join: some
            next:
              - when: <% succeeded() %>
                do: t2, missing
              - publish: 12
          t2:
            with:
              items: not an expression
            retry:
              when: <% failed() %>
            delay: -1
        """
    )
    assert found == [
        "wf.yaml:2:1: colour: unknown key; expected one of version, description, input, "
        "vars, tasks, output",
        "wf.yaml:1:10: version: must be 1.0, not 2.0",
        "wf.yaml:6:5: tasks.t1.acton: unknown key; expected one of action, input, next, "
        "join, with, retry, delay",
        "wf.yaml:11:18: tasks.t1.next[1].publish: must be a list of `name: value` or "
        "`name=value` text",
        "wf.yaml:7:11: tasks.t1.join: must be `all` or a positive count, not 'some'",
        "wf.yaml:14:14: tasks.t2.with.items: must be an expression or `x in <% ... %>`, "
        "not 'not an expression'",
        "wf.yaml:16:7: tasks.t2.retry.count: is required",
        "wf.yaml:17:12: tasks.t2.delay: must be a non-negative integer or an expression, not -1",
        "wf.yaml:10:13: tasks.t1.next[0].do: task 'missing' is not defined",
    ]


def test_wrong_types_name_the_field():
    found = problems(
        """\
        version: 1.0
        input: 3
        tasks:
          t:
            action: [core.noop]
            input: [a, b]
            next: {do: x}
        """
    )
    assert found == [
        "wf.yaml:2:8: input: must be a list of `name: value` entries, not an integer",
        "wf.yaml:5:13: tasks.t.action: must be a non-empty string, not a list",
        "wf.yaml:6:12: tasks.t.input: must be a mapping of input names, not a list",
        "wf.yaml:7:11: tasks.t.next: must be a list of transitions, not a mapping",
    ]


def test_engine_commands_are_not_task_names_and_a_loop_needs_an_entry():
    found = problems(
        """\
        version: 1.0
        tasks:
          fail:
            action: core.noop
          a:
            next: [{do: b}]
          b:
            next: [{do: a}]
        """
    )
    assert found[0] == "wf.yaml:3:3: tasks.fail: 'fail' is an engine command, not a task name"
    found = problems("version: 1.0\ntasks:\n  a:\n    next: [{do: b}]\n  b:\n    next: [{do: a}]\n")
    assert found == [
        "wf.yaml:2:1: tasks: no task to start with (every task is the target of a transition); "
        "add a task that leads into the loop"
    ]


def test_missing_parts_and_yaml_errors():
    assert problems("version: 1.0\n") == ["wf.yaml:1:1: tasks: is required"]
    assert problems("") == ["wf.yaml: the workflow file is empty"]
    assert problems("tasks: {a: [}\n")[0].startswith("wf.yaml:1:")
    assert problems("- a\n") == ["wf.yaml:1:1: must be a mapping, not a list"]


def test_a_yaml_bomb_is_refused_quickly_and_located():
    lines = ["version: 1.0", "a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    lines += ["tasks:", "  t:", "    input: {v: *a9}", "    action: core.noop"]
    started = time.monotonic()
    found = problems("\n".join(lines))
    assert time.monotonic() - started < 2
    assert len(found) == 1
    assert "alias bomb" in found[0] and found[0].startswith("wf.yaml:")


def test_inline_parameters_follow_orquesta():
    pairs, bad = parse_inline(
        "a=1 b=2.5 c=\"x y\" d='q' e=true f=null g=<% ctx(x) %> h={{ y }} i=word "
        "j='{\"k\": 1}' l=[1, 2]"
    )
    assert bad == []
    assert pairs == [
        ("a", 1),
        ("b", 2.5),
        ("c", "x y"),
        ("d", "q"),
        ("e", True),
        ("f", None),
        ("g", "<% ctx(x) %>"),
        ("h", "{{ y }}"),
        ("i", "word"),
        ("j", {"k": 1}),
        ("l", [1, 2]),
    ]
    assert parse_inline("a=<% open") == ([], ["a: the expression <% is never closed"])
    assert parse_inline("junk a=1") == ([("a", 1)], ["'junk' is not of the form name=value"])


def test_an_inline_problem_is_located():
    found = problems("version: 1.0\ntasks:\n  t:\n    action: core.echo message='open\n")
    assert found == [
        "wf.yaml:4:13: tasks.t.action: inline input: message: the quote ' is never closed"
    ]
