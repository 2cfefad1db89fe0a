"""What a workflow expression can see (`ExpressionContext`), and the functions that read it.

``ctx()``, ``result()``, ``succeeded()``, ``task_status(name)``, ``task(name)``,
``item()``, ``st2kv(key)``... are written once here, taking the context first; the YAQL
and Jinja sides bind them to the context of each evaluation. The messages follow
Orquesta's where StackStorm users will recognise them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import WorkflowExpressionError

__all__ = ["COMPLETED_STATUSES", "CONTEXT_FUNCTIONS", "NO_ITEM", "ExpressionContext"]

#: A task status after which the task runs no more (Orquesta's completed statuses).
COMPLETED_STATUSES = frozenset({"succeeded", "failed", "expired", "abandoned", "canceled"})


class _NoItem:
    """The current item when the task is not a with-items task."""

    def __repr__(self) -> str:
        return "NO_ITEM"


NO_ITEM: Any = _NoItem()

#: st2kv(key, decrypt) -> the value; raises KeyError when the key does not exist.
KeyValueLookup = Callable[[str, bool], Any]


@dataclass(frozen=True)
class ExpressionContext:
    """Everything one evaluation may read; the evaluation never changes it.

    `tasks` maps a task name to its record as StackStorm's ``task(name)`` shows it: at
    least ``status`` and ``result`` (for a with-items task, ``result`` is
    ``{"items": [...]}``), optionally ``task_execution_id``, ``route`` and timestamps.
    """

    #: The workflow's variables: input, vars, and what transitions published.
    ctx: Mapping[str, Any] = field(default_factory=dict)
    tasks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: The task whose transitions, retry or input are being evaluated (for result()...).
    current_task: str | None = None
    current_result: Any = None
    current_status: str | None = None
    #: The with-items item being rendered (item(), item(name)); NO_ITEM outside with-items.
    item: Any = NO_ITEM
    st2kv: KeyValueLookup | None = None
    #: The route of the task being evaluated (its input, retry or transitions), if any.
    route: int | None = None
    #: Each task's latest completed run on each route: task(name, route) reads it.
    task_routes: Mapping[str, Mapping[int, Mapping[str, Any]]] = field(default_factory=dict)
    #: Told each expression before it is evaluated (the step's child process writes it
    #: where its watchdog reads it, to name what ran out of time); None: nobody listens.
    progress: Callable[[str], None] | None = None


_MISSING: Any = object()


def ctx_(scope: ExpressionContext, name: str | None = None) -> Any:
    if name is None:
        return {key: value for key, value in scope.ctx.items() if not key.startswith("__")}
    if name not in scope.ctx or str(name).startswith("__"):
        raise WorkflowExpressionError(f'Variable "{name}" is referenced before assignment.')
    return scope.ctx[name]


def _current(scope: ExpressionContext, function: str) -> str:
    if scope.current_task is None:
        raise WorkflowExpressionError(
            f"{function}() is only available where a task has run (in next, retry or publish)"
        )
    return scope.current_task


def result_(scope: ExpressionContext) -> Any:
    _current(scope, "result")
    return scope.current_result


def succeeded_(scope: ExpressionContext) -> bool:
    _current(scope, "succeeded")
    return scope.current_status == "succeeded"


def failed_(scope: ExpressionContext) -> bool:
    _current(scope, "failed")
    return scope.current_status == "failed"


def completed_(scope: ExpressionContext) -> bool:
    _current(scope, "completed")
    return scope.current_status in COMPLETED_STATUSES


def task_status_(scope: ExpressionContext, name: str, route: int | None = None) -> str:
    """As Orquesta: the status of task `name` on `route` (by default the evaluating
    task's own, else its latest run); "unset" for a task that has not run there."""
    if route is not None and (isinstance(route, bool) or not isinstance(route, int)):
        raise WorkflowExpressionError(
            f"task_status({name}): route must be an integer, got {route!r}"
        )
    current = name == scope.current_task and scope.current_status is not None
    if current and route in (None, scope.route):
        return scope.current_status
    wanted = route if route is not None else scope.route
    record = scope.task_routes.get(name, {}).get(wanted) if wanted is not None else None
    if record is None and route is None:
        record = scope.tasks.get(name)
    return "unset" if record is None else str(record.get("status", "unset"))


def task_(scope: ExpressionContext, name: str | None = None, route: int | None = None) -> Any:
    """As Orquesta: the run of task `name` on `route`, by default the evaluating task's
    own route (a branch sees its own runs of a task reached on several routes); where
    no route is known (the output), the task's latest run."""
    if name is None:
        name = _current(scope, "task")
        route = scope.route
    if route is not None and (isinstance(route, bool) or not isinstance(route, int)):
        raise WorkflowExpressionError(f"task({name}): route must be an integer, got {route!r}")
    wanted = route if route is not None else scope.route
    record = scope.task_routes.get(name, {}).get(wanted) if wanted is not None else None
    if record is None and route is None:
        record = scope.tasks.get(name)
    if record is None and name == scope.current_task and route in (None, scope.route):
        record = {"status": scope.current_status, "result": scope.current_result}
    if record is None:
        raise WorkflowExpressionError(f'Unable to find task execution for "{name}".')
    return {"task_name": name, "task_id": name, **record}


def item_(scope: ExpressionContext, name: str | None = None) -> Any:
    if scope.item is NO_ITEM:
        raise WorkflowExpressionError("item() is only available in a with-items task")
    if name is None:
        return scope.item
    if not isinstance(scope.item, Mapping):
        raise WorkflowExpressionError(f"item({name}): the item is not a mapping")
    if name not in scope.item:
        raise WorkflowExpressionError(f'Item does not have key "{name}".')
    return scope.item[name]


def st2kv_(
    scope: ExpressionContext, key: str, decrypt: bool = False, default: Any = _MISSING
) -> Any:
    if not isinstance(key, str):
        raise WorkflowExpressionError("st2kv: the key must be a string")
    if not isinstance(decrypt, bool):
        raise WorkflowExpressionError("st2kv: decrypt must be true or false")
    if scope.st2kv is None:
        raise WorkflowExpressionError("st2kv: no datastore is available to this evaluation")
    try:
        return scope.st2kv(key, decrypt)
    except KeyError:
        if default is _MISSING:
            # StackStorm's words and name: "x" for system.x, "<user>:x" for a user's key.
            name = key.split(".", 1)[1] if key.startswith(("system.", "user.")) else key
            st2 = scope.ctx.get("st2")
            user = st2.get("user") if isinstance(st2, Mapping) else None
            if not key.startswith("system.") and isinstance(user, str) and user:
                name = f"{user}:{name}"
            raise WorkflowExpressionError(
                f'The key "{name}" does not exist in the StackStorm datastore.'
            ) from None
        return default


#: Functions of both languages that read the context, by name; each takes it first.
CONTEXT_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "ctx": ctx_,
    "result": result_,
    "succeeded": succeeded_,
    "failed": failed_,
    "completed": completed_,
    "task_status": task_status_,
    "task": task_,
    "item": item_,
    "st2kv": st2kv_,
}
