"""An Orquesta workflow definition (StackStorm's spec, version 1.0) read into frozen records.

`parse_workflow(text, file)` reads the YAML through engine.support.safeyaml (alias bombs and deep
nesting are refused before anything walks the document), then checks the node graph
field by field, so every problem names ``file:line:col`` and the field path
(``tasks.task1.next[0].do``). All problems are collected and raised together as one
`WorkflowSpecError`. Expressions are kept as their source text: checking and evaluating
them is engine.workflows.expressions' work. The records are in engine.workflows.model
(re-exported here).

Pure: text in, records out; nothing is read, run or stored.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from engine.errors import WorkflowProblem, WorkflowSpecError, YamlLimitError
from engine.support import safeyaml
from engine.workflows.inline import parse_inline
from engine.workflows.model import (
    ENGINE_COMMANDS,
    ItemsSpec,
    RetrySpec,
    TaskSpec,
    Transition,
    WorkflowSpec,
)

__all__ = [
    "ENGINE_COMMANDS",
    "ItemsSpec",
    "RetrySpec",
    "TaskSpec",
    "Transition",
    "WorkflowSpec",
    "parse_workflow",
    "read_workflow",
]

# Variable names may hold periods (`- published.hosts: ...`, as StackStorm's field-escaping
# test does); task names may not hold what `do: a, b` splits on.
_VARIABLE = re.compile(r"\A[^\s]+\Z")
_TASK_NAME = re.compile(r"\A[^\s,]+\Z")
# `x in <% ... %>` / `x, y in {{ ... }}` (Orquesta's with-items forms), or one expression.
_ITEMS = re.compile(
    r"\A\s*(?:(?P<names>\w+(?:\s*,\s*\w+)*)\s+in\s+)?(?P<expr><%.*%>|\{\{.*\}\})\s*\Z", re.DOTALL
)
_TASK_KEYS = ("action", "input", "next", "join", "with", "retry", "delay")
_TOP_KEYS = ("version", "description", "input", "vars", "tasks", "output")


def parse_workflow(text: str, file: str | None = None) -> WorkflowSpec:
    """The workflow defined by `text`; WorkflowSpecError with every problem found."""
    spec, problems = read_workflow(text, file)
    if problems:
        raise WorkflowSpecError(problems)
    assert spec is not None
    return spec


def read_workflow(
    text: str, file: str | None = None
) -> tuple[WorkflowSpec | None, list[WorkflowProblem]]:
    """The workflow as far as it could be read, and every problem found.

    With problems, the spec (when there is one) leaves out the parts that were wrong, so
    `inspect` can still check the rest: every problem of a file is reported at once.
    """
    reader = _Reader(file)
    try:
        root = safeyaml.compose(text, file=file)
    except YamlLimitError as error:
        problem = WorkflowProblem(error.message, file=file, line=error.line, column=error.column)
        return None, [problem]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        message = getattr(error, "problem", None) or str(error)
        return None, [reader.problem_at(mark, "", f"invalid YAML: {message}")]
    if root is None:
        return None, [WorkflowProblem("the workflow file is empty", file=file)]
    spec = reader.workflow(root)
    return spec, reader.problems


class _Reader:
    """Walks the composed node graph, collecting problems and field locations."""

    def __init__(self, file: str | None) -> None:
        self.file = file
        self.problems: list[WorkflowProblem] = []
        self.locations: dict[str, tuple[int, int]] = {}
        # Field path -> its key's node: a problem with a whole entry points at its name.
        self.keys: dict[str, yaml.Node] = {}

    # --- reporting ---------------------------------------------------------------

    def problem_at(self, mark: Any, path: str, message: str) -> WorkflowProblem:
        return WorkflowProblem(
            f"{path}: {message}" if path else message,
            file=self.file,
            line=mark.line + 1 if mark is not None else None,
            column=mark.column + 1 if mark is not None else None,
            field=path or None,
        )

    def report(self, node: yaml.Node, path: str, message: str) -> None:
        self.problems.append(self.problem_at(node.start_mark, path, message))

    def seen(self, node: yaml.Node, path: str) -> None:
        self.locations[path] = (node.start_mark.line + 1, node.start_mark.column + 1)

    # --- shapes --------------------------------------------------------------------

    def mapping(
        self, node: yaml.Node, path: str, allowed: tuple[str, ...] | None = None
    ) -> dict[str, yaml.Node] | None:
        """The entries of a mapping node by key; None (reported) if it is not one."""
        self.seen(node, path)
        if not isinstance(node, yaml.MappingNode):
            self.report(node, path, f"must be a mapping, not {_kind(node)}")
            return None
        entries: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str) or key_node.tag != "tag:yaml.org,2002:str":
                self.report(key_node, path, f"keys must be names, not {_kind(key_node)}")
                continue
            child = f"{path}.{key}" if path else key
            if key in entries:
                self.report(key_node, child, "is given twice")
            elif allowed is not None and key not in allowed:
                self.report(key_node, child, f"unknown key; expected one of {', '.join(allowed)}")
            else:
                entries[key] = value_node
                self.keys[child] = key_node
        return entries

    def data(self, node: yaml.Node, path: str) -> Any:
        self.seen(node, path)
        try:
            return safeyaml.construct(node, file=self.file)
        except YamlLimitError as error:
            self.report(node, path, error.message)
            return None

    def text(self, node: yaml.Node, path: str, *, optional: bool = False) -> str | None:
        value = self.data(node, path)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            self.report(node, path, f"must be a non-empty string, not {_kind(node)}")
            return None
        return value

    def count_or_expression(self, node: yaml.Node, path: str) -> int | str | None:
        """A non-negative int or an expression string (delay, count, concurrency)."""
        value = self.data(node, path)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str) and value.strip():
            if _ITEMS.match(value) is None or _ITEMS.match(value)["names"]:
                self.report(node, path, f"must be a number or an expression, not {value!r}")
                return None
            return value
        self.report(node, path, f"must be a non-negative integer or an expression, not {value!r}")
        return None

    def named_values(self, node: yaml.Node, path: str, *, names_alone: bool = False) -> list:
        """`- name: value` lists (or a mapping); with names_alone, `- name` too (input)."""
        if isinstance(node, yaml.MappingNode):
            entries = self.mapping(node, path) or {}
            return [
                (key, self.data(value, f"{path}.{key}"), True) for key, value in entries.items()
            ]
        self.seen(node, path)
        if not isinstance(node, yaml.SequenceNode):
            self.report(node, path, f"must be a list of `name: value` entries, not {_kind(node)}")
            return []
        found: list = []
        names: set[str] = set()
        for index, item in enumerate(node.value):
            where = f"{path}[{index}]"
            if names_alone and isinstance(item, yaml.ScalarNode):
                name, value, given = self.data(item, where), None, False
            elif isinstance(item, yaml.MappingNode) and len(item.value) == 1:
                key_node, value_node = item.value[0]
                name, given = key_node.value, True
                value = self.data(value_node, f"{path}.{name}")
            else:
                self.report(item, where, "must be a mapping with exactly one `name: value`")
                continue
            if not isinstance(name, str) or not _VARIABLE.match(name):
                self.report(item, where, f"{name!r} is not a name (no spaces)")
            elif name in names:
                self.report(item, where, f"{name!r} is given twice")
            else:
                names.add(name)
                found.append((name, value, given))
        return found

    # --- the workflow ------------------------------------------------------------------

    def workflow(self, root: yaml.Node) -> WorkflowSpec | None:
        entries = self.mapping(root, "", _TOP_KEYS)
        if entries is None:
            return None
        version = self._version(entries, root)
        description = None
        if "description" in entries:
            description = self.text(entries["description"], "description", optional=True)
        inputs = tuple(
            self.named_values(entries["input"], "input", names_alone=True)
            if "input" in entries
            else ()
        )
        variables = self._pairs(entries, "vars")
        output = self._pairs(entries, "output")
        tasks: dict[str, TaskSpec] = {}
        if "tasks" not in entries:
            self.report(root, "tasks", "is required")
        else:
            tasks = self._tasks(entries["tasks"])
        self._check_targets(tasks)
        return WorkflowSpec(
            version=version,
            description=description,
            input=inputs,
            vars=variables,
            tasks=tasks,
            output=output,
            file=self.file,
            locations=self.locations,
        )

    def _version(self, entries: dict[str, yaml.Node], root: yaml.Node) -> str:
        if "version" not in entries:
            self.report(root, "version", "is required (version: 1.0)")
            return "1.0"
        value = self.data(entries["version"], "version")
        if str(value) not in ("1", "1.0"):
            self.report(entries["version"], "version", f"must be 1.0, not {value!r}")
        return "1.0"

    def _pairs(self, entries: dict[str, yaml.Node], key: str) -> tuple[tuple[str, Any], ...]:
        if key not in entries:
            return ()
        return tuple((name, value) for name, value, _ in self.named_values(entries[key], key))

    def _tasks(self, node: yaml.Node) -> dict[str, TaskSpec]:
        entries = self.mapping(node, "tasks")
        if entries is None:
            return {}
        if not entries:
            self.report(node, "tasks", "must define at least one task")
        tasks = {}
        for name, task_node in entries.items():
            path = f"tasks.{name}"
            if not _TASK_NAME.match(name):
                self.report(self.keys[path], path, "a task name has no spaces or commas")
            elif name in ENGINE_COMMANDS:
                self.report(
                    self.keys[path], path, f"{name!r} is an engine command, not a task name"
                )
            task = self._task(name, task_node, path)
            key = self.keys[path].start_mark
            self.locations[path] = (key.line + 1, key.column + 1)  # a task is where its name is
            if task is not None:
                tasks[name] = task
        return tasks

    def _task(self, name: str, node: yaml.Node, path: str) -> TaskSpec | None:
        if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
            entries: dict[str, yaml.Node] | None = {}  # `task1:` with nothing: a no-op task
        else:
            entries = self.mapping(node, path, _TASK_KEYS)
        if entries is None:
            return None
        action, task_input = self._action(entries, path)
        if "input" in entries:
            if task_input:
                self.report(entries["input"], f"{path}.input", "given inline in action and here")
            task_input = self._task_input(entries["input"], f"{path}.input")
        with_items = self._with(entries["with"], f"{path}.with") if "with" in entries else None
        if with_items is not None and action is None:
            self.report(node, f"{path}.with", "a with-items task needs an action")
        return TaskSpec(
            name=name,
            action=action,
            input=task_input,
            next=self._next(entries["next"], f"{path}.next") if "next" in entries else (),
            join=self._join(entries["join"], f"{path}.join") if "join" in entries else None,
            with_items=with_items,
            retry=self._retry(entries["retry"], f"{path}.retry") if "retry" in entries else None,
            delay=(
                self.count_or_expression(entries["delay"], f"{path}.delay")
                if "delay" in entries
                else None
            ),
        )

    def _action(self, entries: dict[str, yaml.Node], path: str) -> tuple[str | None, dict]:
        if "action" not in entries:
            return None, {}
        node = entries["action"]
        action = self.text(node, f"{path}.action")
        if action is None:
            return None, {}
        ref, _, inline = action.strip().partition(" ")
        if not inline.strip() or ref.startswith(("<%", "{{")):
            return action.strip(), {}
        pairs, problems = parse_inline(inline)
        for problem in problems:
            self.report(node, f"{path}.action", f"inline input: {problem}")
        for name, _ in pairs:
            self.locations[f"{path}.input.{name}"] = self.locations[f"{path}.action"]
        return ref, dict(pairs)

    def _task_input(self, node: yaml.Node, path: str) -> dict[str, Any] | str:
        value = self.data(node, path)
        if isinstance(value, str) and value.strip():
            return value  # one expression giving the whole input
        if not isinstance(value, dict):
            self.report(node, path, f"must be a mapping of input names, not {_kind(node)}")
            return {}
        for key_node, value_node in node.value:
            self.seen(value_node, f"{path}.{key_node.value}")
            if not isinstance(key_node.value, str) or not _VARIABLE.match(key_node.value):
                self.report(key_node, path, f"{key_node.value!r} is not an input name")
        return value

    def _next(self, node: yaml.Node, path: str) -> tuple[Transition, ...]:
        self.seen(node, path)
        if not isinstance(node, yaml.SequenceNode):
            self.report(node, path, f"must be a list of transitions, not {_kind(node)}")
            return ()
        transitions = []
        for index, item in enumerate(node.value):
            where = f"{path}[{index}]"
            entries = self.mapping(item, where, ("when", "publish", "do"))
            if entries is None:
                continue
            when = self.text(entries["when"], f"{where}.when") if "when" in entries else None
            publish: tuple[tuple[str, Any], ...] = ()
            if "publish" in entries:
                publish = self._publish(entries["publish"], f"{where}.publish")
            do: tuple[str, ...] = ("continue",)
            if "do" in entries:
                do = self._do(entries["do"], f"{where}.do")
            transitions.append(Transition(when=when, publish=publish, do=do))
        return tuple(transitions)

    def _publish(self, node: yaml.Node, path: str) -> tuple[tuple[str, Any], ...]:
        if isinstance(node, yaml.ScalarNode):
            text = self.data(node, path)
            if not isinstance(text, str):
                self.report(node, path, "must be a list of `name: value` or `name=value` text")
                return ()
            pairs, problems = parse_inline(text)
            for problem in problems:
                self.report(node, path, problem)
            return tuple(pairs)
        return tuple((name, value) for name, value, _ in self.named_values(node, path))

    def _do(self, node: yaml.Node, path: str) -> tuple[str, ...]:
        value = self.data(node, path)
        if isinstance(value, str):
            names = [name.strip() for name in value.split(",")]
        elif isinstance(value, list) and all(isinstance(name, str) for name in value):
            names = [name.strip() for name in value]
        else:
            self.report(node, path, "must be a task name, a comma-separated string or a list")
            return ()
        if not all(names):
            self.report(node, path, f"has an empty task name in {value!r}")
        return tuple(name for name in names if name)

    def _join(self, node: yaml.Node, path: str) -> str | int | None:
        value = self.data(node, path)
        if value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            return value
        self.report(node, path, f"must be `all` or a positive count, not {value!r}")
        return None

    def _with(self, node: yaml.Node, path: str) -> ItemsSpec | None:
        if isinstance(node, yaml.ScalarNode):
            items_node, concurrency = node, None
        else:
            entries = self.mapping(node, path, ("items", "concurrency"))
            if entries is None:
                return None
            if "items" not in entries:
                self.report(node, f"{path}.items", "is required")
                return None
            items_node = entries["items"]
            concurrency = None
            if "concurrency" in entries:
                concurrency = self.count_or_expression(
                    entries["concurrency"], f"{path}.concurrency"
                )
        text = self.text(items_node, f"{path}.items")
        found = _ITEMS.match(text) if text else None
        if found is None:
            if text:
                self.report(
                    items_node,
                    f"{path}.items",
                    f"must be an expression or `x in <% ... %>`, not {text!r}",
                )
            return None
        names = tuple(n.strip() for n in found["names"].split(",")) if found["names"] else ()
        return ItemsSpec(expression=found["expr"], names=names, concurrency=concurrency)

    def _retry(self, node: yaml.Node, path: str) -> RetrySpec | None:
        entries = self.mapping(node, path, ("when", "count", "delay"))
        if entries is None:
            return None
        if "count" not in entries:
            self.report(node, f"{path}.count", "is required")
            return None
        count = self.count_or_expression(entries["count"], f"{path}.count")
        when = self.text(entries["when"], f"{path}.when") if "when" in entries else None
        delay = None
        if "delay" in entries:
            delay = self.count_or_expression(entries["delay"], f"{path}.delay")
        return RetrySpec(when=when, count=count if count is not None else 0, delay=delay)

    def _check_targets(self, tasks: dict[str, TaskSpec]) -> None:
        for task in tasks.values():
            for index, transition in enumerate(task.next):
                path = f"tasks.{task.name}.next[{index}].do"
                for name in transition.do:
                    if name not in tasks and name not in ENGINE_COMMANDS:
                        line, column = self.locations.get(path, (None, None))
                        self.problems.append(
                            WorkflowProblem(
                                f"{path}: task {name!r} is not defined",
                                file=self.file,
                                line=line,
                                column=column,
                                field=path,
                            )
                        )
        if tasks and not WorkflowSpec("1.0", None, (), (), tasks, ()).start_tasks():
            self.report(
                self.keys["tasks"],
                "tasks",
                "no task to start with (every task is the target of a transition); "
                "add a task that leads into the loop",
            )


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    tag = node.tag.rpartition(":")[2]
    return {"str": "a string", "int": "an integer", "null": "null"}.get(tag, f"a {tag}")
