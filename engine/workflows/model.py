"""The records of an Orquesta workflow definition, as engine.workflows.spec reads them.

Frozen and made of plain data (strings, numbers, dicts, lists, tuples): expressions are
kept as their source text. Build them with `engine.workflows.spec.parse_workflow`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ENGINE_COMMANDS",
    "ItemsSpec",
    "RetrySpec",
    "TaskSpec",
    "Transition",
    "WorkflowSpec",
]

#: Names a transition's `do` may use that are not tasks: commands to the workflow engine.
ENGINE_COMMANDS = frozenset({"continue", "fail", "noop", "retry"})


@dataclass(frozen=True)
class Transition:
    """One entry of a task's `next`: when `when` holds, publish, then do `do`."""

    when: str | None
    #: (variable, value or expression) in the order written.
    publish: tuple[tuple[str, Any], ...]
    #: Task names and engine commands; Orquesta's default is ("continue",).
    do: tuple[str, ...]


@dataclass(frozen=True)
class ItemsSpec:
    """A task's `with`: run the action once per item of `expression`'s value."""

    expression: str
    #: The names of `x, y in <% zip(...) %>` (item(x)); empty for the bare form (item()).
    names: tuple[str, ...]
    #: How many items may run at once: an int, an expression, or None (no limit).
    concurrency: int | str | None

    def bind(self, item: Any) -> Any:
        """What item() gives for one item: with names, a mapping (``x, y in zip(...)``:
        {x: item[0], y: item[1]}; ``x in ...``: {x: item}); without, the item itself."""
        if self.names and isinstance(item, list | tuple):
            return dict(zip(self.names, item, strict=False))
        if len(self.names) == 1:
            return {self.names[0]: item}
        return item


@dataclass(frozen=True)
class RetrySpec:
    """A task's `retry`: run it again up to `count` times while `when` holds."""

    when: str | None
    count: int | str
    delay: int | str | None


@dataclass(frozen=True)
class TaskSpec:
    name: str
    #: The action ref (or an expression giving it); None for a task that only publishes.
    action: str | None
    #: The action's input: a mapping of values and expressions, or one expression.
    input: dict[str, Any] | str
    next: tuple[Transition, ...]
    #: "all", a count of inbound transitions to wait for, or None (not a join).
    join: str | int | None
    with_items: ItemsSpec | None
    retry: RetrySpec | None
    #: Seconds to wait before the task runs: an int, an expression, or None.
    delay: int | str | None


@dataclass(frozen=True)
class WorkflowSpec:
    version: str
    description: str | None
    #: (name, default, has_default) in the order written: `name` or `name: default`.
    input: tuple[tuple[str, Any, bool], ...]
    vars: tuple[tuple[str, Any], ...]
    #: Tasks by name, in the order written.
    tasks: dict[str, TaskSpec]
    output: tuple[tuple[str, Any], ...]
    file: str | None = None
    #: Field path -> (line, column), 1-based, of every field read (for later messages).
    locations: Mapping[str, tuple[int, int]] = field(default_factory=dict, compare=False)

    def start_tasks(self) -> list[str]:
        """Tasks no transition of another task leads to, in the order written."""
        targets = {
            name
            for task in self.tasks.values()
            for transition in task.next
            for name in transition.do
            if name != task.name
        }
        return [name for name in self.tasks if name not in targets]

    def tasks_in_cycles(self) -> frozenset[str]:
        """Tasks from which a path of transitions leads back to themselves."""
        edges = {
            name: {t for transition in task.next for t in transition.do if t in self.tasks}
            for name, task in self.tasks.items()
        }
        cyclic = set()
        for start in edges:
            seen: set[str] = set()
            pending = list(edges[start])
            while pending:
                current = pending.pop()
                if current == start:
                    cyclic.add(start)
                    break
                if current not in seen:
                    seen.add(current)
                    pending.extend(edges[current])
        return frozenset(cyclic)

    def inbound(self, task_name: str) -> list[tuple[str, int]]:
        """(task, transition index) of every transition whose `do` names `task_name`."""
        return [
            (task.name, index)
            for task in self.tasks.values()
            for index, transition in enumerate(task.next)
            if task_name in transition.do
        ]
