"""What the conductor does when a task's action finishes: retry it, or take its
transitions (publish, stage the next tasks, engine commands), or fail the workflow.

A part of `engine.workflows.conductor.WorkflowConductor` (it works on the conductor's
state through the conductor's own helpers), kept apart because it is where most of
Orquesta's semantics live.
"""

from __future__ import annotations

from typing import Any

from engine.errors import WorkflowExpressionError
from engine.workflows.context import ExpressionContext
from engine.workflows.expressions import evaluate
from engine.workflows.spec import ENGINE_COMMANDS, TaskSpec
from engine.workflows.statuses import (
    CANCELED,
    CANCELING,
    COMPLETED,
    FAILED,
    FAILED_MESSAGE,
    PAUSING,
    RETRY_COMMAND_TIMES,
    RUNNING,
)


class TaskCompletion:
    """The conductor's completion steps (mixed into WorkflowConductor)."""

    # Provided by WorkflowConductor.
    spec: Any
    state: dict[str, Any]
    status: Any
    _scope: Any
    _eval: Any
    _error: Any
    _fail: Any
    _route: Any
    _stage: Any
    _number: Any

    def _complete(self, record: dict[str, Any], outcome: str, result: Any) -> None:
        task = self.spec.tasks[record["id"]]
        record["status"], record["result"] = outcome, result
        scope = self._scope(record)
        if outcome == CANCELED:
            # A canceled task cancels its workflow (StackStorm cascades cancel upwards).
            if self.status not in COMPLETED:
                self.state["status"] = CANCELING
            self.state["terminal"].append([record["seq"], list(record["ctx"])])
            return
        retrying = self.status in (RUNNING, PAUSING) and task.retry is not None
        if retrying and self._retry(record, task, scope):
            return
        taken_anywhere = False
        manual_fail = retry_command = False
        staged: list[tuple[str, int, list[int], str]] = []
        for index, transition in enumerate(task.next):
            targets = transition.do
            transition_id = f"{targets[0] if targets else 'continue'}__t{index}"
            try:
                if transition.when is not None and not evaluate(transition.when, scope):
                    continue
                out_ctx = list(record["ctx"])
                if transition.publish:
                    rolling = dict(scope.ctx)
                    delta = {}
                    for name, value in transition.publish:
                        delta[name] = rolling[name] = self._eval(value, rolling, record)
                    self.state["contexts"].append(delta)
                    out_ctx.append(len(self.state["contexts"]) - 1)
            except WorkflowExpressionError as error:
                self._error(
                    str(error),
                    task_id=record["id"],
                    route=record["route"],
                    task_transition_id=transition_id,
                )
                self._fail()
                continue
            for target in targets:
                if target == "retry" and record.get("command_retries", 0) < RETRY_COMMAND_TIMES:
                    retry_command = True
                    continue
                if target in ENGINE_COMMANDS:
                    self.state["terminal"].append([record["seq"], out_ctx])
                    # An exhausted `retry` leaves the task's state as it is, like continue.
                    taken_anywhere |= target not in ("continue", "retry")
                    manual_fail |= target == "fail"
                    continue
                taken_anywhere = True
                route = self._route(record, target, index)
                staged.append((target, route, out_ctx, record["id"]))
        if retry_command and not manual_fail and self.status in (RUNNING, PAUSING):
            record["command_retries"] = record.get("command_retries", 0) + 1
            self._rerun(record, delay=0)
            return
        if not staged and not any(record["seq"] == seq for seq, _ in self.state["terminal"]):
            self.state["terminal"].append([record["seq"], list(record["ctx"])])
        if manual_fail:
            self._error(FAILED_MESSAGE, task_id="fail")
            self._fail()
        elif outcome == FAILED and not taken_anywhere:
            self._fail()
        if staged and not manual_fail and self.status in (FAILED, CANCELING, CANCELED):
            # Nothing staged here will run: what this task published is where the run ends.
            self.state["terminal"].extend([record["seq"], ctx] for _, _, ctx, _ in staged)
        for target, route, ctx, arrival in staged:
            before = len(self.state["tasks"])
            self._stage(target, route, ctx, arrival or None)
            if manual_fail:
                for new in self.state["tasks"][before:]:
                    new["run_on_fail"] = True

    def _retry(self, record: dict[str, Any], task: TaskSpec, scope: ExpressionContext) -> bool:
        assert task.retry is not None
        try:
            count = self._number(task.retry.count, record, "retry count")
            if record["retry_tally"] >= count:
                return False
            if task.retry.when is None:
                wanted = record["status"] == FAILED
            else:
                wanted = bool(evaluate(task.retry.when, scope))
            delay = self._number(task.retry.delay, record, "retry delay") if task.retry.delay else 0
        except WorkflowExpressionError as error:
            self._error(str(error), task_id=record["id"], route=record["route"])
            self._fail()
            return False
        if not wanted:
            return False
        self._rerun(record, delay)
        return True

    def _rerun(self, record: dict[str, Any], delay: int) -> None:
        """Run the task of `record` again, after `delay` seconds, with the same context."""
        record["retry_tally"] += 1
        record["status"] = "staged"
        record["retry_delay"] = delay
        for key in ("items", "item_results", "item_values", "result"):
            record.pop(key, None)
