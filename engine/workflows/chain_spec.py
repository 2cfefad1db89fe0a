"""An action chain definition (StackStorm's `action-chain` runner) read into frozen records.

`parse_chain(text, file)` reads the YAML through engine.support.safeyaml and checks it the
way StackStorm's runner does before it runs (st2common's ActionChain schema and the
runner's `validate`), but at pack load and with every problem located ``file:line:col``:
a link without a name or a ref, a name given twice, `params` and `parameters` both given,
an `on-success`, `on-failure` or `default` naming no link. A target that is a template
(``{{ ... }}``) is left to run time, as in StackStorm. All problems are raised together
as one `WorkflowSpecError`.

Pure: text in, records out; nothing is read, run or stored.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
import yaml

from engine.errors import WorkflowProblem, WorkflowSpecError, YamlLimitError
from engine.rules.templates import is_template
from engine.support import safeyaml

__all__ = ["ChainSpec", "LinkSpec", "parse_chain"]

_TOP_KEYS = ("chain", "default", "vars")
# `description` is not in StackStorm's schema, yet its own examples (publish_data) use it:
# the schema checks only the first link, so every later one may carry anything.
_LINK_KEYS = (
    "name",
    "ref",
    "params",
    "parameters",
    "on-success",
    "on-failure",
    "publish",
    "notify",
    "description",
)


@dataclass(frozen=True)
class LinkSpec:
    name: str
    ref: str
    params: Mapping[str, Any] = field(default_factory=dict)
    on_success: str | None = None
    on_failure: str | None = None
    publish: Mapping[str, Any] = field(default_factory=dict)
    notify: Mapping[str, Any] = field(default_factory=dict)
    line: int | None = None

    def context(self) -> dict[str, Any]:
        """The link as StackStorm puts it in its child's `context.chain` (the node's
        attributes; the st2 CLI reads `name` for the task table)."""
        return {
            "name": self.name,
            "ref": self.ref,
            "params": dict(self.params),
            "parameters": dict(self.params),
            "on_success": self.on_success,
            "on_failure": self.on_failure,
            "publish": dict(self.publish),
            "notify": dict(self.notify),
        }


@dataclass(frozen=True)
class ChainSpec:
    links: tuple[LinkSpec, ...]
    default: str
    vars: Mapping[str, Any] = field(default_factory=dict)
    file: str | None = None

    def link(self, name: str | None) -> LinkSpec | None:
        for link in self.links:
            if link.name == name:
                return link
        return None


def parse_chain(text: str, file: str | None = None) -> ChainSpec:
    """The chain defined by `text`; WorkflowSpecError with every problem found."""
    problems: list[WorkflowProblem] = []

    def report(node: yaml.Node | None, message: str) -> None:
        mark = node.start_mark if node is not None else None
        problems.append(
            WorkflowProblem(
                message,
                file=file,
                line=mark.line + 1 if mark is not None else None,
                column=mark.column + 1 if mark is not None else None,
            )
        )

    try:
        root = safeyaml.compose(text, file=file)
        data = safeyaml.construct(root, file=file) if root is not None else None
    except YamlLimitError as error:
        raise WorkflowSpecError(
            [WorkflowProblem(error.message, file=file, line=error.line, column=error.column)]
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        message = getattr(error, "problem", None) or str(error)
        raise WorkflowSpecError(
            [WorkflowProblem(f"invalid YAML: {message}", file=file, line=line)]
        ) from None
    if not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
        report(root, "an action chain must be a mapping with `chain` (a list of links)")
        raise WorkflowSpecError(problems)
    nodes = {key.value: (key, value) for key, value in root.value}
    for key, (key_node, _) in nodes.items():
        if key not in _TOP_KEYS:
            report(key_node, f"unknown key {key!r}; expected one of {', '.join(_TOP_KEYS)}")
    chain_node = nodes.get("chain", (root, None))[1]
    if not isinstance(chain_node, yaml.SequenceNode) or not chain_node.value:
        report(chain_node or root, "`chain` must be a non-empty list of links")
        raise WorkflowSpecError(problems)
    links = [
        link
        for node, item in zip(chain_node.value, data["chain"], strict=True)
        if (link := _link(node, item, report)) is not None
    ]
    seen: dict[str, LinkSpec] = {}
    for link in links:
        if link.name in seen:
            first = seen[link.name]
            problems.append(
                WorkflowProblem(
                    f"link name {link.name!r} is given twice (first at line {first.line});"
                    " link names must be unique in a chain",
                    file=file,
                    line=link.line,
                )
            )
        seen.setdefault(link.name, link)
    for link in links:
        for target, key in ((link.on_success, "on-success"), (link.on_failure, "on-failure")):
            if target and not is_template(target) and target not in seen:
                problems.append(
                    WorkflowProblem(
                        f'unable to find link "{target}" referenced in "{key}" in link'
                        f' "{link.name}"; links: {", ".join(seen)}',
                        file=file,
                        line=link.line,
                    )
                )
    default = data.get("default")
    if default is not None and (not isinstance(default, str) or default not in seen):
        report(
            nodes["default"][1],
            f'unable to find link "{default}" referenced in "default"; links: {", ".join(seen)}',
        )
    variables = data.get("vars") or {}
    if not isinstance(variables, dict):
        report(nodes["vars"][1], "`vars` must be a mapping of names to values")
    elif variables:
        _values_parse(nodes["vars"][1], "vars", report)
    if problems:
        raise WorkflowSpecError(problems)
    return ChainSpec(tuple(links), default or _default(links), variables, file)


def _link(node: yaml.Node, data: Any, report: Any) -> LinkSpec | None:
    if not isinstance(node, yaml.MappingNode) or not isinstance(data, dict):
        report(node, "a link must be a mapping with `name` and `ref`")
        return None
    keys = {key.value: (key, value) for key, value in node.value}
    for key, (key_node, _) in keys.items():
        if key not in _LINK_KEYS:
            expected = ", ".join(_LINK_KEYS)
            report(key_node, f"unknown key {key!r} in a link; expected one of {expected}")
    ok = True
    for required in ("name", "ref"):
        value = data.get(required)
        if not isinstance(value, str) or not value.strip():
            where = keys[required][1] if required in keys else node
            report(where, f"a link needs `{required}` (a non-empty string)")
            ok = False
    if data.get("params") and data.get("parameters"):
        report(node, 'either "params" or "parameters" may be given, not both')
        ok = False
    params = data.get("parameters") or data.get("params") or {}
    for key in ("params", "parameters", "publish", "notify"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            report(keys[key][1], f"`{key}` must be a mapping")
            ok = False
    for key in ("on-success", "on-failure"):
        if data.get(key) is not None and not isinstance(data[key], str):
            report(keys[key][1], f"`{key}` must be the name of a link")
            ok = False
    for key in ("params", "parameters", "publish"):
        if isinstance(data.get(key), dict) and not _values_parse(keys[key][1], key, report):
            ok = False
    if not ok:
        return None
    return LinkSpec(
        name=data["name"],
        ref=data["ref"],
        params=params,
        on_success=data.get("on-success") or None,
        on_failure=data.get("on-failure") or None,
        publish=data.get("publish") or {},
        notify=data.get("notify") or {},
        line=node.start_mark.line + 1,
    )


# Only parsed, never compiled or rendered here: filters are known (and values bound) at
# run time; a template that cannot even be parsed is a mistake in the file.
_SYNTAX = jinja2.Environment()


def _values_parse(mapping: yaml.Node, key: str, report: Any) -> bool:
    """Whether every name in a link's `params`/`publish` is a string and every template
    among its values parses as Jinja; each problem reported where it is."""
    ok = True
    for name_node, value_node in mapping.value:
        if name_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *defaults`: its values are checked where they are written
        if name_node.tag != "tag:yaml.org,2002:str":
            report(name_node, f"`{key}` names must be strings, not {name_node.value!r}")
            ok = False
            continue
        for node in _scalars(value_node):
            if is_template(node.value):
                try:
                    with warnings.catch_warnings():
                        # StackStorm's regex examples write "\w" in Jinja strings, which
                        # Python warns about (and tests turn into errors); it parses.
                        warnings.simplefilter("ignore", DeprecationWarning)
                        warnings.simplefilter("ignore", SyntaxWarning)
                        _SYNTAX.parse(node.value)
                except jinja2.TemplateSyntaxError as error:
                    report(
                        node,
                        f'`{key}` "{name_node.value}": template syntax error: {error.message}',
                    )
                    ok = False
    return ok


def _scalars(node: yaml.Node) -> list[yaml.ScalarNode]:
    if isinstance(node, yaml.ScalarNode):
        return [node] if node.tag == "tag:yaml.org,2002:str" else []
    if isinstance(node, yaml.MappingNode):
        return [found for _, value in node.value for found in _scalars(value)]
    if isinstance(node, yaml.SequenceNode):
        return [found for item in node.value for found in _scalars(item)]
    return []


def _default(links: list[LinkSpec]) -> str:
    """StackStorm's default when none is given: the first link no other link leads to,
    else the first link."""
    targets = {link.on_success for link in links} | {link.on_failure for link in links}
    for link in links:
        if link.name not in targets:
            return link.name
    return links[0].name
