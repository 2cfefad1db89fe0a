"""The static checks of ``hookyard workflow inspect`` (StackStorm's ``st2 workflow inspect``).

One pass reports everything wrong with a definition at once, each problem located
``file:line:col: field: message``:
- syntax: the YAML and the spec (engine.workflows.spec), every problem;
- expression: every ``<% %>`` / ``{{ }}`` that does not compile, quoted;
- unreachable: tasks no path from a start task leads to (a loop with no way in);
- context: ``ctx(name)`` / ``ctx().name`` read where nothing sets `name` (input, vars,
  publish, output; ``st2`` is the runtime context StackStorm always provides). The check
  is global, not along each path: a name published by a later task counts as set.

Pure: text in, problems out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from engine.workflows.expressions import ctx_names_read, expression_problems
from engine.workflows.spec import TaskSpec, WorkflowSpec, read_workflow

__all__ = ["InspectionProblem", "inspect_workflow"]

#: Variables the runner always sets: StackStorm's runtime context (`ctx(st2).user`...).
RUNTIME_VARIABLES = frozenset({"st2", "parent"})


@dataclass(frozen=True)
class InspectionProblem:
    #: "syntax", "expression", "unreachable" or "context".
    kind: str
    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = [self.file or "<workflow>"]
        if self.line is not None:
            where.append(str(self.line))
            if self.column is not None:
                where.append(str(self.column))
        field = f"{self.field}: " if self.field and self.kind != "syntax" else ""
        return f"{':'.join(where)}: {field}{self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "field": self.field,
        }


def inspect_workflow(text: str, file: str | None = None) -> list[InspectionProblem]:
    """Every problem of the workflow defined by `text`, in the order above."""
    spec, syntax = read_workflow(text, file)
    problems = [
        InspectionProblem("syntax", p.message, file, p.line, p.column, p.field) for p in syntax
    ]
    if spec is None:
        return problems
    locate = _Locator(spec)
    for path, value in _expression_fields(spec):
        for message in expression_problems(value):
            problems.append(InspectionProblem("expression", message, file, *locate(path), path))
    for name in _unreachable(spec):
        path = f"tasks.{name}"
        problems.append(
            InspectionProblem(
                "unreachable",
                f"task {name!r} is never reached from the start tasks "
                f"({', '.join(spec.start_tasks()) or 'none'})",
                file,
                *locate(path),
                path,
            )
        )
    assigned = _assigned(spec)
    for path, value in _expression_fields(spec):
        for name in sorted(ctx_names_read(value) - assigned):
            problems.append(
                InspectionProblem(
                    "context",
                    f"ctx({name}) is read but {name!r} is never set (not in input, vars, "
                    "publish or output)",
                    file,
                    *locate(path),
                    path,
                )
            )
    return problems


class _Locator:
    """(line, column) of a field path, or of the nearest enclosing field that was read."""

    def __init__(self, spec: WorkflowSpec) -> None:
        self.locations = spec.locations

    def __call__(self, path: str) -> tuple[int | None, int | None]:
        while path:
            if path in self.locations:
                return self.locations[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None, None


def _expression_fields(spec: WorkflowSpec) -> Iterator[tuple[str, Any]]:
    """(field path, value) of every field that may hold expressions."""
    for name, default, _ in spec.input:
        yield f"input.{name}", default
    for name, value in spec.vars:
        yield f"vars.{name}", value
    for task in spec.tasks.values():
        yield from _task_fields(task)
    for name, value in spec.output:
        yield f"output.{name}", value


def _task_fields(task: TaskSpec) -> Iterator[tuple[str, Any]]:
    path = f"tasks.{task.name}"
    yield f"{path}.action", task.action
    if isinstance(task.input, dict):
        for key, value in task.input.items():
            yield f"{path}.input.{key}", value
    else:
        yield f"{path}.input", task.input
    if task.with_items is not None:
        yield f"{path}.with.items", task.with_items.expression
        yield f"{path}.with.concurrency", task.with_items.concurrency
    if task.retry is not None:
        yield f"{path}.retry.when", task.retry.when
        yield f"{path}.retry.count", task.retry.count
        yield f"{path}.retry.delay", task.retry.delay
    yield f"{path}.delay", task.delay
    for index, transition in enumerate(task.next):
        where = f"{path}.next[{index}]"
        yield f"{where}.when", transition.when
        for name, value in transition.publish:
            yield f"{where}.publish.{name}", value


def _unreachable(spec: WorkflowSpec) -> list[str]:
    reached = set(spec.start_tasks())
    pending = list(reached)
    while pending:
        task = spec.tasks[pending.pop()]
        for transition in task.next:
            for name in transition.do:
                if name in spec.tasks and name not in reached:
                    reached.add(name)
                    pending.append(name)
    return [name for name in spec.tasks if name not in reached]


def _assigned(spec: WorkflowSpec) -> set[str]:
    names = set(RUNTIME_VARIABLES)
    names.update(name for name, _, _ in spec.input)
    names.update(name for name, _ in spec.vars)
    # Output entries are set in order, and a later one may read an earlier one.
    names.update(name for name, _ in spec.output)
    for task in spec.tasks.values():
        for transition in task.next:
            names.update(name for name, _ in transition.publish)
    return names
