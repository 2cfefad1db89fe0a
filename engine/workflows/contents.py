"""What StackStorm checks of a workflow's tasks against the registered actions before it
runs one: each static action ref is well formed and registered, and each task's input
names the action's required parameters and nothing it does not take.

A workflow with such problems fails before any task runs, its result
``{"errors": [<one "content" entry per problem>], "output": None}`` — the entries in
StackStorm's words and shape (`type`, `message`, `spec_path`, `schema_path`), so a
workflow calling an action that does not exist fails at once rather than after the
tasks before it ran. Pure: the caller says what an action takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.workflows.expressions import has_expressions
from engine.workflows.model import WorkflowSpec

__all__ = ["ActionInputs", "content_errors"]

_TASK_SCHEMA = "properties.tasks.patternProperties.^\\w+$"


@dataclass(frozen=True)
class ActionInputs:
    """The parameters a registered action takes (its runner's included)."""

    names: frozenset[str]
    #: Required and without a default: a task must give them.
    required: tuple[str, ...]


#: An action ref -> what it takes, or None when no such action is registered.
ActionLookup = Callable[[str], ActionInputs | None]


def content_errors(spec: WorkflowSpec, lookup: ActionLookup) -> list[dict[str, Any]]:
    """Every problem of the tasks' actions and inputs, in task order (none: [])."""
    errors: list[dict[str, Any]] = []
    for name, task in spec.tasks.items():
        ref = task.action
        # An action-less task, or an action chosen by an expression, is checked when it runs.
        if not isinstance(ref, str) or not ref or has_expressions(ref):
            continue
        action_path = f"tasks.{name}.action"
        input_path = f"tasks.{name}.input"
        if "." not in ref.strip("."):
            errors.append(
                _entry(
                    f'The action reference "{ref}" is not formatted correctly.',
                    action_path,
                    f"{_TASK_SCHEMA}.properties.action",
                )
            )
            continue
        inputs = lookup(ref)
        if inputs is None:
            errors.append(
                _entry(
                    f'The action "{ref}" is not registered in the database.',
                    action_path,
                    f"{_TASK_SCHEMA}.properties.action",
                )
            )
            continue
        given = task.input if isinstance(task.input, dict) else None
        if given is None:
            continue  # one expression gives the whole input: known only when it runs
        for required in inputs.required:
            if required not in given:
                errors.append(
                    _entry(
                        f'Action "{ref}" is missing required input "{required}".',
                        input_path,
                        f"{_TASK_SCHEMA}.properties.input",
                    )
                )
        for key in given:
            if isinstance(key, str) and key not in inputs.names and not has_expressions(key):
                errors.append(
                    _entry(
                        f'Action "{ref}" has unexpected input "{key}".',
                        f"{input_path}.{key}",
                        f"{_TASK_SCHEMA}.properties.input.patternProperties.^\\w+$",
                    )
                )
    return errors


def _entry(message: str, spec_path: str, schema_path: str) -> dict[str, Any]:
    return {
        "type": "content",
        "message": message,
        "spec_path": spec_path,
        "schema_path": schema_path,
    }
