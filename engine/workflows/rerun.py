"""Re-running an ended Orquesta workflow from chosen tasks (StackStorm's `st2 execution
re-run <id> --tasks a b [--no-reset a]`): pure, over a conductor's stored state.

Facts from StackStorm (st2api's re_run controller, st2common's workflows.request_rerun,
orquesta's conducting.request_workflow_rerun), followed here:
- the re-run is a new action execution that continues the original's workflow state:
  tasks not named keep their state and results (``task(name).result``, published
  values, the output built from them); only an ended workflow can be re-run;
- each named task runs again on every route it ran on, with the context it ran with;
  its errors are dropped, and so are the output (with the errors rendering it gave) and
  the ended status of the workflow;
- a with-items task runs again only its failed (or canceled, or never started) items,
  or all of them when it is in `reset`;
- a named task that a named other one leads to is not requested itself: it runs when
  the other one's transitions reach it (otherwise it would run twice).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from engine.errors import WorkflowError
from engine.workflows.conductor import ActionRequest, WorkflowConductor
from engine.workflows.model import WorkflowSpec
from engine.workflows.statuses import CANCELED, COMPLETED, FAILED, RUNNING, SUCCEEDED

__all__ = ["rerun", "unknown_tasks"]

_ENDED_TASK = (SUCCEEDED, FAILED, CANCELED)
_ITEM_ABENDED = ("unset", FAILED, CANCELED)


def unknown_tasks(state: dict[str, Any], names: Sequence[str]) -> list[str]:
    """The names in `names` no ended task run of the workflow has (they cannot be
    re-run: a typo, or a task the workflow never reached), in the order given."""
    ran = {record["id"] for record in state.get("tasks", ()) if record["status"] in _ENDED_TASK}
    return [name for name in dict.fromkeys(names) if name not in ran]


def rerun(
    conductor: WorkflowConductor, names: Sequence[str], reset: Collection[str] = ()
) -> list[ActionRequest]:
    """Turn the ended workflow of `conductor` running again from the tasks `names`;
    returns the action runs to request now. WorkflowError if the workflow has not ended
    or a name is not a task that ran."""
    state = conductor.state
    if conductor.status not in COMPLETED:
        raise WorkflowError(f"a {conductor.status} workflow cannot be re-run: it has not ended")
    missing = unknown_tasks(state, names)
    if missing:
        raise WorkflowError(
            "the workflow cannot be re-run from task(s) it has not run: " + ", ".join(missing)
        )
    spec = conductor.spec
    wanted = _collapsed(spec, list(dict.fromkeys(names)))
    # Records before this one are of earlier runs: a join met again starts afresh.
    state["rerun_from"] = len(state["tasks"])
    state.setdefault("reruns", []).append(list(wanted))
    downstream = _reachable(spec, wanted)
    rerun_seqs = set()
    for record in _latest_runs(state, wanted):
        rerun_seqs.add(record["seq"])
        if record.get("items"):
            _reopen_items(record, every=record["id"] in reset)
        else:
            state["tasks"].append(
                {
                    "id": record["id"],
                    "seq": len(state["tasks"]),
                    "route": record["route"],
                    "ctx": list(record["ctx"]),
                    "status": "staged",
                    "arrivals": list(record.get("arrivals", [])),
                    "retry_tally": 0,
                }
            )
    # What the re-run tasks and those after them gave is replaced by what they give now.
    first = min(rerun_seqs)
    state["terminal"] = [
        entry
        for entry in state["terminal"]
        if entry[0] not in rerun_seqs
        and not (entry[0] > first and state["tasks"][entry[0]]["id"] in downstream)
    ]
    # The named tasks' errors go, and the output's (it is rendered again at the end).
    state["errors"] = [e for e in state["errors"] if e.get("task_id") not in (*names, None)]
    state["status"] = RUNNING
    state["output"] = None
    state.pop("output_from", None)
    requests = []
    for record in state["tasks"]:
        if record["status"] == RUNNING and "unset" in (record.get("items") or ()):
            requests.extend(conductor._request_items(record, spec.tasks[record["id"]]))
    return requests + conductor._advance()


def _collapsed(spec: WorkflowSpec, names: list[str]) -> list[str]:
    """`names` without those another named task leads to (unless they lead back to it)."""
    reach = {name: _reachable(spec, [name]) for name in names}
    return [
        name
        for name in names
        if not any(name in reach[other] and other not in reach[name] for other in names)
    ]


def _reachable(spec: WorkflowSpec, starts: Sequence[str]) -> set[str]:
    """The tasks a path of transitions leads to from `starts` (not `starts` themselves,
    unless a loop leads back)."""
    seen: set[str] = set()
    pending = [t for name in starts for tr in spec.tasks[name].next for t in tr.do]
    while pending:
        name = pending.pop()
        if name in seen or name not in spec.tasks:
            continue
        seen.add(name)
        pending.extend(t for tr in spec.tasks[name].next for t in tr.do)
    return seen


def _latest_runs(state: dict[str, Any], names: Sequence[str]) -> list[dict[str, Any]]:
    """The last ended run of each named task on each route it ran on."""
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for record in state["tasks"]:
        if record["id"] in names and record["status"] in _ENDED_TASK:
            latest[(record["id"], record["route"])] = record
    return sorted(latest.values(), key=lambda record: (record["id"], record["route"]))


def _reopen_items(record: dict[str, Any], every: bool) -> None:
    """A with-items run made running again: its failed items (all with `every`, or
    when none failed) unset."""
    every = every or not any(status in _ITEM_ABENDED for status in record["items"])
    for index, status in enumerate(record["items"]):
        if every or status in _ITEM_ABENDED:
            record["items"][index] = "unset"
            record["item_results"][index] = None
    record["status"] = RUNNING
    record.pop("result", None)
