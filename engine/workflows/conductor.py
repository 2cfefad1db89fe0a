"""The Orquesta conductor: a pure state machine that decides which actions a workflow runs.

``WorkflowConductor.start(spec, inputs)`` renders input and vars and returns the first
`ActionRequest`s; ``task_finished(task, route, status, result, item_id)`` takes one action
result and returns the requests it makes ready. Between calls the whole state is
`conductor.state`, a plain dict that round-trips through ``json.dumps``, so the runner
stores it in the same transaction as the step (``WorkflowConductor(spec, state)``
continues it). ``pause()``, ``resume()`` and ``cancel()`` stop or restart requesting
(the runner pauses or cancels the running actions; their results still come in).
Nothing here runs an action, sleeps or reads the store.

Semantics follow Orquesta (orquesta/conducting.py, machines.py), as StackStorm runs it:
- contexts flow along transitions: a task sees the context of the transition that
  staged it (a join merges its inbound ones); `publish` adds to it, in order;
- a task reached by several transitions without `join` runs once per arrival, each on
  its own route (a list of split points); a join waits for `all` or N inbound tasks;
- a failed task whose taken transitions lead anywhere but `continue` is remediated;
  otherwise the workflow fails at once (running tasks may still report);
  `do: fail` fails it too, yet still runs the other tasks of that transition;
- retry (`when`, `count`, `delay`) is decided before transitions; with-items runs
  every item, `concurrency` at a time, and fails if any item failed;
- a canceled action cancels the workflow (StackStorm cascades cancel upwards); a
  timeout, abandoned or expired action is a failure;
- every failed action logs ``{"type": "error", "message": "Execution failed. See result
  for details.", "task_id", "result"}``; the output is rendered from the terminal
  contexts when the workflow completes, failed or not, as far as it can be.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from engine.errors import WorkflowError, WorkflowExpressionError
from engine.workflows.completion import TaskCompletion
from engine.workflows.context import NO_ITEM, ExpressionContext, KeyValueLookup
from engine.workflows.expressions import evaluate, evaluate_parameter
from engine.workflows.functions import NONE_MARKER
from engine.workflows.spec import TaskSpec, WorkflowSpec
from engine.workflows.statuses import (
    CANCELED,
    CANCELING,
    COMPLETED,
    FAILED,
    FAILED_MESSAGE,
    PAUSED,
    PAUSING,
    RUNNING,
    SUCCEEDED,
)

__all__ = ["ActionRequest", "ParameterKinds", "WorkflowConductor"]

ParameterKinds = Callable[[str], Mapping[str, str]]
#: progress(task or None for input/vars/output, expression) before each evaluation.
Progress = Callable[[str | None, str], None]
# Items of one with-items task (each one a child execution).
MAX_WITH_ITEMS = 10_000

_STATE_VERSION = 1


@dataclass(frozen=True)
class ActionRequest:
    """Run `action` with `input` for task `task` (route, item), after `delay` seconds."""

    task: str
    route: int
    action: str
    input: dict[str, Any]
    item_id: int | None = None
    delay: int = 0
    #: Unique per run of a task (retries and loops make new ones): a key for idempotence.
    key: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class WorkflowConductor(TaskCompletion):
    def __init__(
        self,
        spec: WorkflowSpec,
        state: dict[str, Any],
        st2kv: KeyValueLookup | None = None,
        parameter_kinds: ParameterKinds | None = None,
        progress: Progress | None = None,
    ) -> None:
        if state.get("version") != _STATE_VERSION:
            raise WorkflowError(f"workflow state version {state.get('version')!r} is unknown")
        self.spec = spec
        self.state = state
        self.st2kv = st2kv
        # Action ref -> its parameters' kinds (engine.rules.parameter_kinds): a shell
        # command or URL in a task's input quotes what its expressions insert.
        self._parameter_kinds = parameter_kinds
        self._progress = progress
        self._cycles = spec.tasks_in_cycles()

    # --- the public steps ------------------------------------------------------------

    @classmethod
    def start(
        cls,
        spec: WorkflowSpec,
        inputs: Mapping[str, Any],
        *,
        runtime_context: Mapping[str, Any] | None = None,
        st2kv: KeyValueLookup | None = None,
        parameter_kinds: ParameterKinds | None = None,
        progress: Progress | None = None,
    ) -> tuple[WorkflowConductor, list[ActionRequest]]:
        """A new workflow run: input and vars rendered, start tasks requested."""
        state: dict[str, Any] = {
            "version": _STATE_VERSION,
            "status": RUNNING,
            "input": {},
            "contexts": [{}],
            "routes": [[]],
            "tasks": [],
            "terminal": [],
            "errors": [],
            "output": None,
        }
        conductor = cls(spec, state, st2kv, parameter_kinds, progress)
        ctx = dict(runtime_context or {})
        try:
            for name, default, has_default in spec.input:
                if name in inputs:
                    ctx[name] = inputs[name]
                else:
                    ctx[name] = conductor._eval(default, ctx) if has_default else None
                state["input"][name] = ctx[name]
            for name, value in spec.vars:
                ctx[name] = conductor._eval(value, ctx)
        except WorkflowExpressionError as error:
            conductor._error(str(error))
            state["status"] = FAILED  # nothing ran: no cancel or pause to respect
            return conductor, []
        state["contexts"][0] = ctx
        for name in spec.start_tasks():
            conductor._stage(name, 0, [0])
        return conductor, conductor._advance()

    def task_finished(
        self,
        task: str,
        route: int,
        status: str,
        result: Any = None,
        item_id: int | None = None,
    ) -> list[ActionRequest]:
        """Record the result of the action run for `task` and return what is now ready."""
        record = self._running_record(task, route)
        # Any other end (timeout, abandoned, expired) is a failure, as in StackStorm.
        outcome = status if status in (SUCCEEDED, CANCELED) else FAILED
        if outcome == FAILED:
            self._error(FAILED_MESSAGE, task_id=task, result=result)
        if record.get("items") is not None:
            if item_id is None or not 0 <= item_id < len(record["items"]):
                raise WorkflowError(f"task {task!r} has no item {item_id!r} running")
            if record["items"][item_id] != RUNNING:
                # A result delivered twice must not count twice (the runner may redeliver).
                raise WorkflowError(f"item {item_id} of task {task!r} is not running")
            record["items"][item_id] = outcome
            record["item_results"][item_id] = result
            unstarted = "unset" in record["items"]
            if RUNNING in record["items"] or (unstarted and self._may_start(record)):
                return self._request_items(record, self.spec.tasks[task])
            if unstarted and self.status in (PAUSING, PAUSED):
                self._settle()  # the rest of the items wait for resume()
                return []
            # Once the workflow has failed or is canceled, items not started never will be.
            if unstarted:
                outcome = CANCELED if self.status in (CANCELING, CANCELED) else FAILED
            else:
                found = (s for s in (CANCELED, FAILED) if s in record["items"])
                outcome = next(found, SUCCEEDED)
            result = list(record["item_results"])
        self._complete(record, outcome, result)
        return self._advance()

    @property
    def status(self) -> str:
        return self.state["status"]

    def pause(self) -> None:
        """Start no new task; the workflow is paused once the running ones have reported."""
        if self.status != RUNNING:
            raise WorkflowError(f"a {self.status} workflow cannot be paused")
        self.state["status"] = PAUSING
        self._settle()

    def resume(self) -> list[ActionRequest]:
        """Run again after pause(): what was staged meanwhile is requested now."""
        if self.status not in (PAUSING, PAUSED):
            raise WorkflowError(f"a {self.status} workflow cannot be resumed")
        self.state["status"] = RUNNING
        requests = []
        for record in self.state["tasks"]:
            if record["status"] == RUNNING and "unset" in (record.get("items") or ()):
                requests.extend(self._request_items(record, self.spec.tasks[record["id"]]))
        return requests + self._advance()

    def cancel(self) -> None:
        """Start no new task; canceled once the running ones (the runner cancels them)
        have reported. The output is rendered as far as it can be."""
        if self.status in COMPLETED or self.status == CANCELING:
            raise WorkflowError(f"a {self.status} workflow cannot be canceled")
        self.state["status"] = CANCELING
        self._settle()

    def result(self) -> dict[str, Any]:
        """The workflow's result in StackStorm's shape."""
        if self.status == FAILED:
            return {"errors": list(self.state["errors"]), "output": self.state["output"]}
        return {"output": self.state["output"]}

    # --- staging and requesting -----------------------------------------------------------

    def _stage(self, name: str, route: int, ctx: list[int], arrival: str | None = None) -> None:
        task = self.spec.tasks[name]
        earlier: dict[str, Any] = {"ctx": [], "arrivals": []}
        if task.join is not None:
            for record in self.state["tasks"]:
                if record["id"] != name or record["route"] != route:
                    continue
                if record["status"] == "waiting":
                    record["ctx"] += [i for i in ctx if i not in record["ctx"]]
                    record["arrivals"].append(arrival)
                    self._check_join(record, task)
                    return
                if record["seq"] < self.state.get("rerun_from", 0):
                    # Met before a re-run (workflows.rerun): its arrivals count again.
                    earlier = record
                    continue
                if name not in self._cycles:
                    # A count join that already ran ignores the branches arriving late;
                    # only a loop brings a join round again.
                    return
        record = {
            "id": name,
            "seq": len(self.state["tasks"]),
            "route": route,
            "ctx": [*earlier["ctx"], *(i for i in ctx if i not in earlier["ctx"])],
            "status": "staged",
            "arrivals": [*earlier["arrivals"], *([arrival] if arrival else [])],
            "retry_tally": 0,
        }
        self.state["tasks"].append(record)
        if task.join is not None:
            record["status"] = "waiting"
            self._check_join(record, task)

    def _check_join(self, record: dict[str, Any], task: TaskSpec) -> None:
        inbound = {source for source, _ in self.spec.inbound(task.name)}
        arrived = set(record["arrivals"])
        needed = len(inbound) if task.join == "all" else task.join
        if len(arrived & inbound) >= needed:
            record["status"] = "staged"

    def _advance(self) -> list[ActionRequest]:
        """Request every staged task; action-less tasks complete here at once."""
        requests: list[ActionRequest] = []
        progressed = True
        while progressed:
            progressed = False
            for record in self.state["tasks"]:
                if record["status"] != "staged" or not self._may_start(record):
                    continue
                progressed = True
                requests.extend(self._request(record))
        self._settle()
        return requests

    def _may_start(self, record: dict[str, Any]) -> bool:
        return self.status == RUNNING or (self.status == FAILED and record.get("run_on_fail"))

    def _request(self, record: dict[str, Any]) -> list[ActionRequest]:
        task = self.spec.tasks[record["id"]]
        record["status"] = RUNNING
        try:
            # A retry waits its own delay instead of the task's (as Orquesta).
            delay = record.pop("retry_delay", None)
            if delay is None:
                # An expression giving null (an input left out) means no delay.
                delay = self._number(task.delay, record, "delay", none_is=0) if task.delay else 0
            record["delay"] = delay
            if task.action is None:
                self._complete(record, SUCCEEDED, None)
                return []
            if task.with_items is None:
                return [self._action_request(record, task, None)]
            items = self._eval(task.with_items.expression, self._ctx(record))
            if not isinstance(items, list):
                raise WorkflowExpressionError(
                    f'the value of "{task.with_items.expression}" is not a list'
                )
            if len(items) > MAX_WITH_ITEMS:
                # Each item is a child execution: a sender's list of 100,000 would be that
                # many rows written in one step, holding the store's writer meanwhile.
                raise WorkflowExpressionError(
                    f"task {task.name!r} has {len(items):,} items; at most "
                    f"{MAX_WITH_ITEMS:,} run in one with-items task"
                )
            record["items"] = ["unset"] * len(items)
            record["item_results"] = [None] * len(items)
            record["item_values"] = [task.with_items.bind(item) for item in items]
            record["concurrency"] = (
                self._number(task.with_items.concurrency, record, "concurrency")
                if task.with_items.concurrency is not None
                else None
            )
            if not items:
                self._complete(record, SUCCEEDED, [])
                return []
            return self._request_items(record, task)
        except WorkflowExpressionError as error:
            self._error(str(error), task_id=record["id"], route=record["route"])
            record["status"] = FAILED
            self._fail()
            return []

    def _request_items(self, record: dict[str, Any], task: TaskSpec) -> list[ActionRequest]:
        if not self._may_start(record):
            return []
        active = record["items"].count(RUNNING)
        room = len(record["items"]) if record["concurrency"] is None else record["concurrency"]
        requests = []
        for index, status in enumerate(record["items"]):
            if status != "unset" or active >= max(room, 1):
                continue
            try:
                requests.append(self._action_request(record, task, index))
            except WorkflowExpressionError as error:
                self._error(str(error), task_id=record["id"], route=record["route"])
                self._fail()
                break
            record["items"][index] = RUNNING
            active += 1
        return requests

    def _action_request(
        self, record: dict[str, Any], task: TaskSpec, item_id: int | None
    ) -> ActionRequest:
        item = NO_ITEM if item_id is None else record["item_values"][item_id]
        scope = self._scope(record, item=item)
        action = evaluate(task.action, scope)
        if not isinstance(action, str) or not action:
            raise WorkflowExpressionError(f"the action of task {task.name!r} is not a ref")
        kinds = self._parameter_kinds(action) if self._parameter_kinds is not None else {}
        if kinds and not isinstance(task.input, Mapping):
            # Every value, the command or URL included, would be the sender's data.
            raise WorkflowExpressionError(
                f"the input of task {task.name!r} runs {action}, which takes a shell command "
                "or URL: write the input as a mapping, not one expression"
            )
        if isinstance(task.input, Mapping):
            rendered = {
                evaluate(name, scope): evaluate_parameter(value, scope, kinds.get(name), name)
                for name, value in task.input.items()
            }
        else:
            rendered = evaluate(task.input, scope)
        if not isinstance(rendered, dict):
            raise WorkflowExpressionError(f"the input of task {task.name!r} is not a mapping")
        # use_none's marker means "this parameter is None" once it reaches an action.
        rendered = {k: None if v == NONE_MARKER else v for k, v in rendered.items()}
        suffix = "" if item_id is None else f":{item_id}"
        # As StackStorm: with a concurrency, only the first batch of items waits the delay.
        concurrency = record.get("concurrency")
        delayed = item_id is None or concurrency is None or item_id < concurrency
        return ActionRequest(
            task=task.name,
            route=record["route"],
            action=action,
            input=rendered,
            item_id=item_id,
            delay=record.get("delay", 0) if delayed else 0,
            key=f"{task.name}:{record['route']}:{record['seq']}:{record['retry_tally']}{suffix}",
        )

    def _settle(self) -> None:
        """Decide the workflow's status and render its output once nothing is active."""
        active = any(
            (r["status"] == RUNNING and (r.get("items") is None or RUNNING in r["items"]))
            or (r["status"] == "staged" and self._may_start(r))
            for r in self.state["tasks"]
        )
        if active:
            return
        settled = {RUNNING: SUCCEEDED, PAUSING: PAUSED, CANCELING: CANCELED}
        self.state["status"] = settled.get(self.status, self.status)
        if self.status not in COMPLETED:
            return
        # Rendered again only if a task that reported after a failure added a context.
        if self.state.get("output_from") != len(self.state["terminal"]):
            self.state["output_from"] = len(self.state["terminal"])
            self._render_output()

    def _render_output(self) -> None:
        ctx: dict[str, Any] = {}
        for _, indexes in sorted(self.state["terminal"], key=lambda entry: entry[0]):
            for index in indexes:
                ctx.update(self.state["contexts"][index])
        output: dict[str, Any] = {}
        for name, value in self.spec.output:
            try:
                output[name] = ctx[name] = self._eval(value, ctx)
            except WorkflowExpressionError as error:
                self._error(str(error))
                self._fail()
        # As Orquesta: a workflow without output (or none rendered) has output None.
        self.state["output"] = output or None

    # --- helpers ----------------------------------------------------------------------------

    def _running_record(self, task: str, route: int) -> dict[str, Any]:
        for record in reversed(self.state["tasks"]):
            if record["id"] == task and record["route"] == route and record["status"] == RUNNING:
                return record
        raise WorkflowError(f"task {task!r} (route {route}) has no action running")

    def _route(self, record: dict[str, Any], target: str, index: int) -> int:
        target_task = self.spec.tasks[target]
        inbound = self.spec.inbound(target)
        if target_task.join is not None or len(inbound) <= 1 or target in self._cycles:
            return record["route"]
        details = [*self.state["routes"][record["route"]], f"{record['id']}__t{index}"]
        if details not in self.state["routes"]:
            self.state["routes"].append(details)
        return self.state["routes"].index(details)

    def _ctx(self, record: dict[str, Any]) -> dict[str, Any]:
        ctx: dict[str, Any] = {}
        for index in record["ctx"]:
            ctx.update(self.state["contexts"][index])
        return ctx

    def _task_views(self) -> tuple[dict[str, Any], dict[str, dict[int, Any]]]:
        """Each task's latest completed run, and its latest one on each route."""
        latest: dict[str, dict[str, Any]] = {}
        by_route: dict[str, dict[int, dict[str, Any]]] = {}
        for other in self.state["tasks"]:
            if other["status"] in (SUCCEEDED, FAILED, CANCELED):
                view = {
                    "status": other["status"],
                    "result": _task_result(other),
                    "route": other["route"],
                }
                latest[other["id"]] = view
                by_route.setdefault(other["id"], {})[other["route"]] = view
        return latest, by_route

    def _scope(self, record: dict[str, Any], item: Any = NO_ITEM) -> ExpressionContext:
        done = record["status"] in (SUCCEEDED, FAILED, CANCELED)
        latest, by_route = self._task_views()
        return ExpressionContext(
            ctx=self._ctx(record),
            tasks=latest,
            task_routes=by_route,
            route=record["route"],
            current_task=record["id"] if done else None,
            current_result=record.get("result") if done else None,
            current_status=record["status"] if done else None,
            item=item,
            st2kv=self.st2kv,
            progress=self._told(record["id"]),
        )

    def _eval(self, value: Any, ctx: Mapping[str, Any], record: dict | None = None) -> Any:
        """`value` evaluated against `ctx` (and, with `record`, that task's result)."""
        if record is None:
            latest, by_route = self._task_views()
            scope = ExpressionContext(
                ctx=ctx,
                tasks=latest,
                task_routes=by_route,
                st2kv=self.st2kv,
                progress=self._told(None),
            )
        else:
            scope = dataclasses.replace(self._scope(record), ctx=ctx)
        return evaluate(value, scope)

    def _told(self, task: str | None) -> Callable[[str], None] | None:
        progress = self._progress
        if progress is None:
            return None
        return lambda expression: progress(task, expression)

    def _number(
        self, value: Any, record: dict[str, Any], what: str, none_is: int | None = None
    ) -> int:
        number = self._eval(value, self._ctx(record)) if isinstance(value, str) else value
        if number is None and none_is is not None:
            return none_is
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise WorkflowExpressionError(
                f"the {what} of task {record['id']!r} is not a non-negative integer: {number!r}"
            )
        return number

    def _fail(self) -> None:
        # A workflow being canceled stays so: cancel wins over a failure (as Orquesta).
        if self.status not in (CANCELING, CANCELED):
            self.state["status"] = FAILED

    def _error(self, message: str, **fields: Any) -> None:
        entry: dict[str, Any] = {"type": "error", "message": message}
        entry.update({key: value for key, value in fields.items() if value is not None})
        if "result" in fields and fields["result"] is None:
            entry["result"] = None
        self.state["errors"].append(entry)


def _task_result(record: dict[str, Any]) -> Any:
    # StackStorm's task(name).result: a with-items task's is {"items": [{status, result}]}.
    if record.get("items") is not None:
        return {
            "items": [
                {"status": status, "result": result}
                for status, result in zip(record["items"], record["item_results"], strict=True)
            ]
        }
    return record.get("result")
