"""A workflow's task runs as the API lists them: children of an execution, depth first.

StackStorm marks a listed workflow by its `children` ids and shows its task table from
`GET /api/v1/executions/{id}/children?depth=-1` (engine.http.executions_api).
"""

from __future__ import annotations

from typing import Any

from engine.model.records import CANCELING
from engine.packs.action import WORKFLOW_RUNNERS
from engine.process.runtime import Runtime
from engine.store.ops.workflows import MAX_CANCEL_DEPTH

# Most task runs listed for one workflow (a with-items over many items has that many).
MAX_CHILDREN = 10_000


def _oldest_first(items: list[Any]) -> list[Any]:
    return sorted(items, key=lambda item: (item.created_at, item.id))


def _is_workflow(runtime: Runtime, record: Any) -> bool:
    """Only a workflow's or a chain's execution has task runs below it."""
    return (
        runtime.action_known(record.action)
        and runtime.packs.action(record.action).runner_type in WORKFLOW_RUNNERS
    )


async def children_ids(runtime: Runtime, record: Any) -> list[str]:
    """A workflow's task runs, oldest first; [] for an execution of any other runner."""
    if not _is_workflow(runtime, record):
        return []
    page = await runtime.store.list_executions({"parent": record.id}, MAX_CHILDREN, 0)
    return [item.id for item in _oldest_first(page.items)]


async def descendants(runtime: Runtime, root: Any, depth: int) -> list[Any]:
    """The task runs under `root`, `depth` levels down (-1: every level), depth first as
    StackStorm lists them (each run followed by its subworkflow's runs: the st2 CLI
    indents that list as a tree), at most MAX_CHILDREN."""
    found: list[Any] = []
    # (execution, level) still to walk, the next one last. One query per workflow, not
    # per task run: a with-items over 10,000 items has that many runs, none with children.
    pending: list[tuple[Any, int]] = [(root, 0)]
    while pending and len(found) < MAX_CHILDREN:
        parent, level = pending.pop()
        if parent is not root:
            found.append(parent)
        if (depth >= 0 and level >= depth) or not (parent is root or _is_workflow(runtime, parent)):
            continue
        page = await runtime.store.list_executions({"parent": parent.id}, MAX_CHILDREN, 0)
        pending.extend((child, level + 1) for child in reversed(_oldest_first(page.items)))
    return found[:MAX_CHILDREN]


async def canceling_descendants(runtime: Runtime, execution_id: str, depth: int = 0) -> list[str]:
    """The ids of the task runs under `execution_id` that the store's cancel cascade set
    canceling."""
    if depth >= MAX_CANCEL_DEPTH:
        return []
    page = await runtime.store.list_executions(
        {"parent": execution_id, "status": CANCELING}, MAX_CHILDREN, 0
    )
    found = []
    for child in page.items:
        found.append(child.id)
        found.extend(await canceling_descendants(runtime, child.id, depth + 1))
    return found
