"""engine.workflows.rerun: an ended workflow run again from chosen tasks, its state
round-tripped through JSON between every step as the runner stores it."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from engine.errors import WorkflowError
from engine.workflows.conductor import ActionRequest, WorkflowConductor
from engine.workflows.rerun import rerun, unknown_tasks
from engine.workflows.spec import parse_workflow

SEQUENCE = """\
    version: 1.0
    input:
      - fail_at
    tasks:
      t1:
        action: core.echo message=one
        next:
          - when: <% succeeded() %>
            publish: first=<% result().stdout %>
            do: t2
      t2:
        action: core.echo message=two
        next:
          - when: <% succeeded() %>
            publish: second=<% result().stdout %>
            do: t3
      t3:
        action: core.echo message=three
        next:
          - when: <% succeeded() %>
            publish: third=<% result().stdout %>
    output:
      - first: <% ctx(first) %>
      - second: <% ctx(second) %>
      - third: <% ctx(third) %>
      - t1_result: <% task(t1).result.stdout %>
"""

ITEMS = """\
    version: 1.0
    input:
      - hosts
    tasks:
      each:
        with: <% ctx(hosts) %>
        action: core.echo message=<% item() %>
        next:
          - when: <% succeeded() %>
            publish: said=<% result().select($.stdout) %>
    output:
      - said: <% ctx(said) %>
"""

JOIN = """\
    version: 1.0
    tasks:
      start:
        action: core.noop
        next:
          - do: left, right
      left:
        action: core.echo message=L
        next:
          - when: <% succeeded() %>
            publish: l=<% result().stdout %>
            do: both
      right:
        action: core.echo message=R
        next:
          - when: <% succeeded() %>
            publish: r=<% result().stdout %>
            do: both
      both:
        join: all
        action: core.noop
    output:
      - joined: <% ctx(l) + ctx(r) %>
"""


class Driver:
    """Runs a conductor as the runner does; `fails` says which (task, item) fail."""

    def __init__(self, text: str, inputs: dict | None = None) -> None:
        self.spec = parse_workflow(textwrap.dedent(text), "wf.yaml")
        self.conductor, self.pending = WorkflowConductor.start(self.spec, inputs or {})
        self.ran: list[ActionRequest] = []
        self.fails: set[tuple[str, int | None]] = set()

    def reload(self) -> WorkflowConductor:
        state = json.loads(json.dumps(self.conductor.state))
        self.conductor = WorkflowConductor(self.spec, state)
        return self.conductor

    def run_all(self) -> WorkflowConductor:
        while self.pending:
            request = self.pending.pop(0)
            self.ran.append(request)
            failed = (request.task, request.item_id) in self.fails
            status, result = ("failed", {"stderr": "boom"}) if failed else ("succeeded", None)
            if not failed:
                result = {"stdout": request.input.get("message")}
            self.pending.extend(
                self.reload().task_finished(
                    request.task, request.route, status, result, request.item_id
                )
            )
        return self.conductor

    def rerun(self, names: list[str], reset: tuple[str, ...] = ()) -> list[ActionRequest]:
        self.ran = []
        self.pending = rerun(self.reload(), names, reset)
        return list(self.pending)


def test_a_failed_task_runs_again_and_its_successors_after_it_keeping_earlier_results():
    run = Driver(SEQUENCE)
    run.fails = {("t2", None)}
    assert run.run_all().status == "failed"
    assert run.conductor.state["errors"][0]["task_id"] == "t2"
    run.fails = set()
    requests = run.rerun(["t2"])
    assert [r.task for r in requests] == ["t2"]
    assert run.conductor.status == "running" and run.conductor.state["output"] is None
    done = run.run_all()
    assert [r.task for r in run.ran] == ["t2", "t3"]  # t1 is not run again
    assert done.status == "succeeded", done.state["errors"]
    assert done.result() == {
        "output": {"first": "one", "second": "two", "third": "three", "t1_result": "one"}
    }
    assert done.state["reruns"] == [["t2"]]


def test_a_succeeded_workflow_reruns_from_its_first_task_and_named_successors_collapse():
    run = Driver(SEQUENCE)
    assert run.run_all().status == "succeeded"
    # t3 follows t1: naming both runs it once, when t2 reaches it.
    assert [r.task for r in run.rerun(["t3", "t1"])] == ["t1"]
    assert run.run_all().status == "succeeded"
    assert [r.task for r in run.ran] == ["t1", "t2", "t3"]


def test_with_items_reruns_only_failed_items_unless_reset():
    run = Driver(ITEMS, {"hosts": ["a", "b", "c"]})
    run.fails = {("each", 1)}
    assert run.run_all().status == "failed"
    run.fails = set()
    assert [r.item_id for r in run.rerun(["each"])] == [1]
    done = run.run_all()
    assert done.status == "succeeded", done.state["errors"]
    assert done.result() == {"output": {"said": ["a", "b", "c"]}}
    again = run.rerun(["each"], reset=("each",))
    assert [r.item_id for r in again] == [0, 1, 2]
    assert run.run_all().status == "succeeded"


def test_a_join_met_again_after_a_rerun_counts_the_branches_that_arrived_before():
    run = Driver(JOIN)
    run.fails = {("right", None)}
    assert run.run_all().status == "failed"
    run.fails = set()
    assert [r.task for r in run.rerun(["right"])] == ["right"]
    done = run.run_all()
    assert [r.task for r in run.ran] == ["right", "both"]
    assert done.status == "succeeded" and done.result() == {"output": {"joined": "LR"}}
    # And a join that already ran runs again when a branch before it is re-run.
    run.rerun(["left"])
    assert run.run_all().status == "succeeded"
    assert [r.task for r in run.ran] == ["left", "both"]


def test_unknown_or_never_run_tasks_are_named_and_a_running_workflow_is_refused():
    run = Driver(SEQUENCE)
    run.fails = {("t1", None)}
    run.run_all()
    state: dict[str, Any] = run.conductor.state
    assert unknown_tasks(state, ["t1", "nope", "t3", "nope"]) == ["nope", "t3"]
    with pytest.raises(WorkflowError, match="has not run: nope, t3"):
        rerun(run.reload(), ["nope", "t3"])
    running = Driver(SEQUENCE)
    with pytest.raises(WorkflowError, match="running workflow cannot be re-run"):
        rerun(running.reload(), ["t1"])
