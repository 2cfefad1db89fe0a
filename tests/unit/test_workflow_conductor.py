"""engine.workflows.conductor: workflows shaped like StackStorm's examples, stepped with the
real expression evaluator, the state round-tripped through JSON between every step."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from engine.errors import WorkflowError
from engine.workflows.conductor import MAX_WITH_ITEMS, ActionRequest, WorkflowConductor
from engine.workflows.spec import parse_workflow

FAILED_LOCAL = {"failed": True, "return_code": 1, "stderr": "", "stdout": "", "succeeded": False}


def echo_actions(request: ActionRequest) -> tuple[str, Any]:
    """core.echo echoes; core.local 'exit 1' fails; everything else succeeds with None."""
    if request.action == "core.local" and request.input.get("cmd") == "exit 1":
        return "failed", FAILED_LOCAL
    if request.action in ("core.echo", "core.local"):
        text = request.input.get("message", request.input.get("cmd"))
        return "succeeded", {"stdout": text, "return_code": 0}
    return "succeeded", None


class Run:
    """Drives a conductor like a runner would: one request at a time, state via JSON."""

    def __init__(self, text: str, inputs: dict | None = None, **start: Any) -> None:
        self.spec = parse_workflow(textwrap.dedent(text), "wf.yaml")
        self.st2kv = start.get("st2kv")
        self.conductor, requests = WorkflowConductor.start(self.spec, inputs or {}, **start)
        self.pending: list[ActionRequest] = list(requests)
        self.ran: list[ActionRequest] = []

    def reload(self) -> WorkflowConductor:
        state = json.loads(json.dumps(self.conductor.state))
        assert state == self.conductor.state
        self.conductor = WorkflowConductor(self.spec, state, self.st2kv)
        return self.conductor

    def finish(self, request: ActionRequest, status: str, result: Any = None) -> None:
        self.pending.remove(request)
        self.ran.append(request)
        new = self.reload().task_finished(
            request.task, request.route, status, result, request.item_id
        )
        self.pending.extend(new)

    def run_all(self, actions: Callable[[ActionRequest], tuple[str, Any]] = echo_actions):
        while self.pending:
            request = self.pending[0]
            self.finish(request, *actions(request))
        return self.conductor

    def tasks_ran(self) -> list[str]:
        return [r.task for r in self.ran]


SEQUENTIAL = """\
    version: 1.0
    input:
      - name
    vars:
      - greeting: null
    output:
      - greeting: <% ctx(greeting) %>
    tasks:
      task1:
        action: core.echo message=<% ctx(name) %>
        next:
          - when: <% succeeded() %>
            publish: greeting=<% result().stdout %>
            do: task2
      task2:
        action: core.echo
        input:
          message: "All your base are belong to us!"
        next:
          - when: <% succeeded() %>
            publish:
              - greeting: <% ctx("greeting") %>, <% result().stdout %>
            do:
              - task3
      task3:
        action: core.echo message=<% ctx('greeting') %>
        next:
          - when: <% succeeded() %>
            publish: greeting=<% result().stdout %>
"""


def test_sequential_runs_in_order_and_renders_the_output():
    run = Run(SEQUENTIAL, {"name": "Stanley"})
    first = run.pending[0]
    assert first == ActionRequest(
        "task1", 0, "core.echo", {"message": "Stanley"}, None, 0, "task1:0:0:0"
    )
    assert first.to_dict()["input"] == {"message": "Stanley"}
    conductor = run.run_all()
    assert run.tasks_ran() == ["task1", "task2", "task3"]
    assert conductor.status == "succeeded"
    assert conductor.result() == {
        "output": {"greeting": "Stanley, All your base are belong to us!"}
    }


def test_branching_follows_the_transition_whose_when_holds():
    text = """\
        version: 1.0
        input: [which]
        tasks:
          t1:
            action: core.noop
            next:
              - when: <% ctx(which) = 'a' %>
                do: a
              - when: "{{ ctx('which') == 'b' }}"
                do: b
          a:
            action: core.echo message=A
          b:
            action: core.echo message=B
    """
    assert Run(text, {"which": "b"}).run_all().status == "succeeded"
    run = Run(text, {"which": "a"})
    run.run_all()
    assert run.tasks_ran() == ["t1", "a"]


JOIN = """\
    version: 1.0
    output:
      - seen: <% ctx(left) + ctx(right) %>
    tasks:
      start:
        action: core.noop
        next:
          - do: [left, right, quick]
      left:
        action: core.echo message=L
        next:
          - publish: left=<% result().stdout %>
            do: joined
      right:
        action: core.echo message=R
        next:
          - publish: right=<% result().stdout %>
            do: joined
      quick:
        action: core.noop
        next:
          - do: first_two
      slow:
        action: core.noop
        next:
          - do: first_two
      joined:
        join: all
        action: core.noop
      first_two:
        join: 1
        action: core.noop
"""


def test_join_all_waits_for_every_branch_and_merges_their_contexts():
    run = Run(JOIN)
    assert [r.task for r in run.pending] == ["start", "slow"]
    run.finish(run.pending[1], "succeeded")  # slow: the count join runs at once
    assert [r.task for r in run.pending] == ["start", "first_two"]
    run.finish(run.pending[0], "succeeded")
    assert [r.task for r in run.pending] == ["first_two", "left", "right", "quick"]
    run.finish(run.pending[0], "succeeded")
    left = run.pending[0]
    run.finish(left, "succeeded", {"stdout": "L"})
    assert "joined" not in [r.task for r in run.pending]
    run.finish(run.pending[0], "succeeded", {"stdout": "R"})
    assert "joined" in [r.task for r in run.pending]
    conductor = run.run_all()
    assert run.tasks_ran().count("joined") == 1
    assert run.tasks_ran().count("first_two") == 1
    assert conductor.result() == {"output": {"seen": "LR"}}


def test_a_task_reached_twice_without_join_runs_once_per_route():
    run = Run(
        """\
        version: 1.0
        tasks:
          a:
            action: core.noop
            next: [{do: shared}]
          b:
            action: core.noop
            next: [{do: shared}]
          shared:
            action: core.echo message=<% ctx(st2).user %>
        """,
        runtime_context={"st2": {"user": "stanley"}},
    )
    run.run_all()
    shared = [r for r in run.ran if r.task == "shared"]
    assert sorted(r.route for r in shared) == [1, 2]
    assert {r.input["message"] for r in shared} == {"stanley"}
    assert run.conductor.state["routes"] == [[], ["a__t0"], ["b__t0"]]


@pytest.mark.parametrize(
    ("own", "by_route"),
    [
        ('<% task("shared").task_id + "@" + str(task("shared").route) %>', "yaql"),
        ('{{ task("shared").task_id ~ "@" ~ task("shared").route }}', "jinja"),
    ],
)
def test_task_reads_the_run_on_its_own_route_or_the_route_asked(own: str, by_route: str):
    # StackStorm's orquesta-test-{yaql,jinja}-task-functions: a task after a split sees the
    # run of its own route, and task(name, route) picks a route.
    asked = {
        "yaql": ["<% task(after, route=>1).result.stdout %>", "<% task(after, 2).route %>"],
        "jinja": ["{{ task('after', route=1).result.stdout }}", "{{ task('after', 2).route }}"],
    }[by_route]
    run = Run(
        f"""\
        version: 1.0
        tasks:
          a:
            action: core.noop
            next: [{{do: shared}}]
          b:
            action: core.noop
            next: [{{do: shared}}]
          shared:
            action: core.noop
            next: [{{do: after}}]
          after:
            action: core.echo
            input:
              message: '{own}'
        output:
          - one: "{asked[0]}"
          - two: "{asked[1]}"
          - latest: <% task(after).route %>
        """
    )
    # b's branch first: the routes are numbered in the order the branches arrive.
    run.pending.reverse()
    run.run_all()
    said = {r.route: r.input["message"] for r in run.ran if r.task == "after"}
    assert said == {1: "shared@1", 2: "shared@2"}
    output = run.conductor.result()["output"]
    assert output["one"] == "shared@1" and output["two"] == 2
    assert output["latest"] in (1, 2)

    missing = Run(
        """\
        version: 1.0
        tasks:
          only:
            action: core.noop
        output:
          - nope: <% task(only, route=>5) %>
        """
    )
    missing.run_all()
    errors = missing.conductor.result()["errors"]
    assert errors[-1]["message"].endswith('Unable to find task execution for "only".')


def test_task_status_reads_a_route_and_a_dynamic_action_ref_is_evaluated():
    run = Run(
        """\
        version: 1.0
        input: [which]
        tasks:
          a:
            action: core.noop
            next: [{do: shared}]
          b:
            action: core.noop
            next: [{do: shared}]
          shared:
            action: <% ctx().which %>
            input:
              message: <% task_status(shared) %>
        output:
          - one: <% task_status(shared, 1) %>
          - two: '{{ task_status("shared", route=2) }}'
          - nowhere: <% task_status(shared, route=>7) %>
        """,
        {"which": "core.echo"},
    )
    run.run_all()
    shared = [r for r in run.ran if r.task == "shared"]
    assert [(r.action, r.input) for r in shared] == [("core.echo", {"message": "unset"})] * 2
    output = run.conductor.result()["output"]
    assert output == {"one": "succeeded", "two": "succeeded", "nowhere": "unset"}


def test_use_none_stays_a_marker_in_the_data_and_is_none_in_a_task_input():
    run = Run(
        """\
        version: 1.0
        vars:
          - nothing: null
        tasks:
          pass_none:
            action: core.echo
            input:
              message: <% use_none(ctx(nothing)) %>
              other: '{{ use_none(ctx("nothing")) }}'
        output:
          - kept: <% use_none(ctx(nothing)) %>
        """
    )
    run.run_all()
    assert run.ran[0].input == {"message": None, "other": None}
    assert run.conductor.result() == {"output": {"kept": "%*****__%NONE%__*****%"}}


WITH_ITEMS = """\
    version: 1.0
    input: [members, hosts, ports]
    tasks:
      greet:
        with:
          items: <% ctx(members) %>
          concurrency: 2
        delay: 5
        action: core.echo message="<% item() %>, resistance is futile!"
        next:
          - when: <% succeeded() %>
            publish: said=<% result().select($.stdout) %>
            do: pairs
      pairs:
        with: host, port in <% zip(ctx(hosts), ctx(ports)) %>
        action: core.echo message="{{ item('host') }}:{{ item('port') }}"
    output:
      - said: <% ctx(said) %>
      - items: <% task(greet).result.items.select($.result.stdout) %>
      - pairs: <% task(pairs).result.items.select($.status) %>
"""


def test_with_items_respects_concurrency_and_collects_results():
    run = Run(WITH_ITEMS, {"members": ["a", "b", "c"], "hosts": ["h1", "h2"], "ports": [22]})
    assert [(r.item_id, r.delay) for r in run.pending] == [(0, 5), (1, 5)]
    run.finish(run.pending[1], "succeeded", {"stdout": "b!"})
    assert [(r.item_id, r.delay) for r in run.pending] == [(0, 5), (2, 0)]
    assert run.pending[1].input == {"message": "c, resistance is futile!"}
    run.finish(run.pending[1], "succeeded", {"stdout": "c!"})
    run.finish(run.pending[0], "succeeded", {"stdout": "a!"})
    assert [r.input["message"] for r in run.pending] == ["h1:22", "h2:None"]
    conductor = run.run_all()
    assert conductor.result() == {
        "output": {
            "said": ["a!", "b!", "c!"],
            "items": ["a!", "b!", "c!"],
            "pairs": ["succeeded", "succeeded"],
        }
    }


def test_with_items_fails_when_an_item_fails_and_an_empty_list_succeeds():
    run = Run(WITH_ITEMS, {"members": ["a", "b"], "hosts": [], "ports": []})
    run.finish(run.pending[0], "failed", {"stdout": "no"})
    assert run.conductor.status == "running"  # item b still runs
    run.finish(run.pending[0], "succeeded", {"stdout": "b!"})
    assert run.conductor.status == "failed" and run.pending == []
    errors = run.conductor.result()["errors"]
    assert errors[0] == {
        "type": "error",
        "message": "Execution failed. See result for details.",
        "task_id": "greet",
        "result": {"stdout": "no"},
    }
    # The output is rendered as far as it can be: what failed to render is reported too.
    assert errors[1]["message"] == (
        "YaqlEvaluationException: Unable to evaluate expression '<% ctx(said) %>'. "
        'ExpressionEvaluationException: Variable "said" is referenced before assignment.'
    )
    empty = Run(WITH_ITEMS, {"members": [], "hosts": [], "ports": []})
    assert empty.pending == [] and empty.conductor.status == "succeeded"


RETRY = """\
    version: 1.0
    tasks:
      check:
        action: core.local cmd="exit 1"
        retry:
          count: <% 2 %>
          delay: 3
        next:
          - when: <% succeeded() %>
            publish: attempts=<% task(check).status %>
    output:
      - attempts: <% ctx(attempts) %>
"""


def test_retry_runs_again_with_its_delay_until_it_succeeds():
    run = Run(RETRY)
    run.finish(run.pending[0], "failed", FAILED_LOCAL)
    assert [(r.task, r.delay, r.key) for r in run.pending] == [("check", 3, "check:0:0:1")]
    run.finish(run.pending[0], "succeeded", {"stdout": ""})
    assert run.conductor.result() == {"output": {"attempts": "succeeded"}}


def test_retry_exhausted_fails_the_workflow_with_every_failure():
    conductor = Run(RETRY).run_all()
    assert conductor.status == "failed"
    failures = [e for e in conductor.result()["errors"] if e.get("task_id")]
    assert [e["task_id"] for e in failures] == ["check"] * 3
    never = RETRY.replace("retry:", "retry:\n          when: <% false %>")
    conductor = Run(never).run_all()
    assert len([e for e in conductor.result()["errors"] if e.get("task_id")]) == 1


ERROR_HANDLING = """\
    version: 1.0
    input: [cmd]
    vars:
      - message: null
    tasks:
      task1:
        action: core.local cmd=<% ctx(cmd) %>
        next:
          - when: <% succeeded() %>
            do: task2
          - when: <% failed() %>
            publish:
              - message: "$%#&@#$!!!"
            do: HANDLER
      task2:
        action: core.noop
        next:
          - when: <% succeeded() %>
            publish:
              - message: "hooray!!!"
      CLEANUP
    output:
      - message: <% ctx().message %>
"""

CLEANUP_TASK = "cleanup:\n        action: core.echo message=<% ctx(message) %>"


def handled_by(handler: str) -> str:
    cleanup = CLEANUP_TASK if "cleanup" in handler else ""
    return ERROR_HANDLING.replace("HANDLER", handler).replace("CLEANUP", cleanup)


FAILURE = {
    "type": "error",
    "message": "Execution failed. See result for details.",
    "task_id": "task1",
    "result": FAILED_LOCAL,
}


def test_continue_on_failure_fails_the_workflow_but_renders_the_output():
    conductor = Run(handled_by("continue"), {"cmd": "exit 1"}).run_all()
    assert conductor.result() == {"errors": [FAILURE], "output": {"message": "$%#&@#$!!!"}}
    conductor = Run(handled_by("continue"), {"cmd": "ok"}).run_all()
    assert conductor.result() == {"output": {"message": "hooray!!!"}}


def test_noop_and_a_cleanup_task_remediate_a_failure():
    conductor = Run(handled_by("noop"), {"cmd": "exit 1"}).run_all()
    assert conductor.result() == {"output": {"message": "$%#&@#$!!!"}}
    run = Run(handled_by("cleanup"), {"cmd": "exit 1"})
    assert run.run_all().status == "succeeded"
    assert run.ran[-1].input == {"message": "$%#&@#$!!!"}


def test_fail_manually_still_runs_the_remediation_of_the_same_transition():
    run = Run(handled_by("[cleanup, fail]"), {"cmd": "exit 1"})
    conductor = run.run_all()
    assert run.tasks_ran() == ["task1", "cleanup"]
    assert conductor.result() == {
        "errors": [
            FAILURE,
            {
                "type": "error",
                "message": "Execution failed. See result for details.",
                "task_id": "fail",
            },
        ],
        "output": {"message": "$%#&@#$!!!"},
    }


def test_an_unremediated_failure_fails_at_once_while_other_tasks_still_report():
    run = Run(
        """\
        version: 1.0
        tasks:
          bad:
            action: core.local cmd="exit 1"
          slow:
            action: core.noop
            next: [{do: after}]
          after:
            action: core.noop
        """
    )
    bad, slow = run.pending
    run.finish(bad, "failed", FAILED_LOCAL)
    assert run.conductor.status == "failed"
    run.finish(slow, "succeeded")
    assert run.pending == [] and "after" not in run.tasks_ran()


def test_action_less_tasks_publish_and_expressions_errors_are_located_by_task():
    run = Run(
        """\
        version: 1.0
        tasks:
          setup:
            next:
              - publish: [{x: 1}, {y: <% ctx(x) + 1 %>}]
                do: use
          use:
            action: core.echo message=<% ctx(y) %>
            next:
              - when: <% result().nope %>
                do: never
          never:
            action: core.noop
        """
    )
    assert [(r.task, r.input) for r in run.pending] == [("use", {"message": 2})]
    conductor = run.run_all()
    assert conductor.result() == {
        "errors": [
            {
                "type": "error",
                "message": "YaqlEvaluationException: Unable to resolve key 'nope' in "
                "expression '<% result().nope %>' from context.",
                "task_id": "use",
                "route": 0,
                "task_transition_id": "never__t0",
            }
        ],
        "output": None,
    }


def test_input_and_vars_errors_fail_before_any_task():
    run = Run("version: 1.0\nvars:\n  - v: <% ctx(nope) %>\ntasks:\n  t:\n    action: core.noop\n")
    assert run.pending == []
    assert run.conductor.result() == {
        "errors": [
            {
                "type": "error",
                "message": "YaqlEvaluationException: Unable to evaluate expression "
                "'<% ctx(nope) %>'. ExpressionEvaluationException: "
                'Variable "nope" is referenced before assignment.',
            }
        ],
        "output": None,
    }


def test_published_values_are_data_and_st2kv_reaches_the_lookup():
    run = Run(
        """\
        version: 1.0
        tasks:
          t1:
            action: core.echo message=x
            next:
              - publish: got=<% result().stdout %>
                do: t2
          t2:
            action: core.echo
            input:
              message: "{{ ctx('got') }}"
              secret: <% st2kv('system.k', decrypt => true) %>
        """,
        st2kv=lambda key, decrypt: f"{key}:{decrypt}",
    )
    run.finish(run.pending[0], "succeeded", {"stdout": "<% ctx(st2) %>{{ 7 * 7 }}"})
    assert run.pending[0].input == {
        "message": "<% ctx(st2) %>{{ 7 * 7 }}",
        "secret": "system.k:True",
    }


def test_the_state_is_json_and_misuse_is_refused():
    run = Run(SEQUENTIAL, {"name": "x"})
    state = json.loads(json.dumps(run.conductor.state))
    with pytest.raises(WorkflowError, match="has no action running"):
        WorkflowConductor(run.spec, state).task_finished("task2", 0, "succeeded")
    items = Run(WITH_ITEMS, {"members": ["a"], "hosts": [], "ports": []})
    only = items.pending[0]
    items.finish(only, "succeeded", {"stdout": "a"})
    with pytest.raises(WorkflowError, match="has no action running"):
        items.conductor.task_finished("greet", 0, "succeeded", None, 0)
    items = Run(WITH_ITEMS, {"members": ["a", "b"], "hosts": [], "ports": []})
    items.finish(items.pending[0], "succeeded", {"stdout": "a"})
    with pytest.raises(WorkflowError, match="item 0 of task 'greet' is not running"):
        items.conductor.task_finished("greet", 0, "succeeded", None, 0)
    with pytest.raises(WorkflowError, match="version"):
        WorkflowConductor(run.spec, {"version": 99})


def test_a_loop_runs_its_task_again_on_the_same_route_with_the_new_context():
    run = Run(
        """\
        version: 1.0
        tasks:
          init:
            next:
              - publish: i=0
                do: loop
          loop:
            action: core.echo message=<% ctx(i) %>
            next:
              - when: <% ctx(i) < 2 %>
                publish: i=<% ctx(i) + 1 %>
                do: loop
              - when: <% ctx(i) >= 2 %>
                do: done
          done:
            action: core.noop
        output:
          - i: <% ctx(i) %>
        """
    )
    conductor = run.run_all()
    assert [(r.task, r.route, r.input) for r in run.ran] == [
        ("loop", 0, {"message": 0}),
        ("loop", 0, {"message": 1}),
        ("loop", 0, {"message": 2}),
        ("done", 0, {}),
    ]
    assert len({r.key for r in run.ran}) == 4
    assert conductor.result() == {"output": {"i": 2}}


def test_the_retry_command_runs_the_task_again_three_times_without_delay():
    text = """\
        version: 1.0
        tasks:
          fetch:
            action: core.local cmd="exit 1"
            next:
              - when: <% failed() %>
                do: retry
              - when: <% succeeded() %>
                do: done
          done:
            action: core.noop
    """
    run = Run(text)
    conductor = run.run_all()
    assert [(r.task, r.delay) for r in run.ran] == [("fetch", 0)] * 4
    assert conductor.status == "failed"
    run = Run(text)
    run.finish(run.pending[0], "failed", FAILED_LOCAL)
    run.finish(run.pending[0], "succeeded", {"stdout": ""})
    assert run.run_all().status == "succeeded" and run.tasks_ran() == ["fetch", "fetch", "done"]


def test_pause_lets_running_tasks_finish_and_resume_requests_what_was_staged():
    run = Run(SEQUENTIAL, {"name": "x"})
    run.conductor.pause()
    assert run.conductor.status == "pausing"
    run.finish(run.pending[0], "succeeded", {"stdout": "x"})
    assert run.pending == [] and run.conductor.status == "paused"
    with pytest.raises(WorkflowError, match="a paused workflow cannot be paused"):
        run.conductor.pause()
    run.pending.extend(run.reload().resume())
    assert [r.task for r in run.pending] == ["task2"]
    assert run.run_all().status == "succeeded"


def test_pause_inside_with_items_holds_the_items_not_started():
    run = Run(WITH_ITEMS.replace("concurrency: 2", "concurrency: 1"), {"members": ["a", "b"]})
    run.conductor.pause()
    run.finish(run.pending[0], "succeeded", {"stdout": "a!"})
    assert run.pending == [] and run.conductor.status == "paused"
    run.pending.extend(run.reload().resume())
    assert [(r.task, r.item_id) for r in run.pending] == [("greet", 1)]
    run.finish(run.pending[0], "succeeded", {"stdout": "b!"})
    assert run.conductor.status == "succeeded"


def test_cancel_waits_for_running_tasks_and_starts_nothing_more():
    run = Run(SEQUENTIAL, {"name": "x"})
    run.conductor.cancel()
    assert run.conductor.status == "canceling"
    run.finish(run.pending[0], "succeeded", {"stdout": "x"})
    assert run.pending == [] and run.conductor.status == "canceled"
    assert run.conductor.result() == {"output": {"greeting": "x"}}
    with pytest.raises(WorkflowError, match="a canceled workflow cannot be canceled"):
        run.conductor.cancel()


def test_a_canceled_task_cancels_its_workflow():
    run = Run(JOIN)
    run.finish(run.pending[1], "canceled")  # slow
    assert run.conductor.status == "canceling"
    run.finish(run.pending[0], "succeeded")  # start: its next tasks never start
    assert run.pending == [] and run.conductor.status == "canceled"
    assert "errors" not in run.conductor.result()


def test_a_with_items_list_over_the_cap_fails_the_workflow_without_a_single_request():
    run = Run(WITH_ITEMS, {"members": [1] * (MAX_WITH_ITEMS + 1), "hosts": [], "ports": []})
    assert run.pending == []
    assert run.conductor.status == "failed"
    messages = [error["message"] for error in run.conductor.result()["errors"]]
    assert any(f"at most {MAX_WITH_ITEMS:,} run in one with-items task" in m for m in messages)
