"""YAML with positions: parse safely and remember where every value came from.

Rule and pack authors get errors as ``file:line:col``; PyYAML's composed nodes carry
the marks, the safe constructor builds the data, and a map from field path to mark
lets any later check (schema, operators, templates) point back at the source.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from engine.errors import RuleLoadError, YamlLimitError
from engine.support import safeyaml

Path = tuple[Any, ...]


class _KeyMarker:
    def __repr__(self) -> str:
        return "<key>"


# Appended to a path, names the position of the mapping key rather than its value.
KEY = _KeyMarker()


@dataclass(frozen=True)
class Located:
    """Parsed YAML data plus the (line, column) of each field path, 1-based."""

    data: Any
    marks: dict[Path, tuple[int, int]]
    file: str | None

    def position(self, path: Path) -> tuple[int | None, int | None]:
        """The mark of `path`, or of its nearest ancestor that has one."""
        path = tuple(path)
        while True:
            mark = self.marks.get(path)
            if mark is not None:
                return mark
            if path and path[-1] is KEY:
                path = path[:-1]
                continue
            if not path:
                return None, None
            path = path[:-1]

    def error(
        self,
        message: str,
        path: Path = (),
        *,
        at_key: bool = False,
        error_cls: type = RuleLoadError,
    ) -> Exception:
        """An error located at `path` (at its key, for unknown-key errors)."""
        path = tuple(path)
        line, column = self.position((*path, KEY) if at_key else path)
        return error_cls(
            message, file=self.file, line=line, column=column, field=format_path(path) or None
        )


def format_path(path: Path) -> str:
    """``criteria."trigger.body.x".type`` — dotted, quoting keys that contain dots."""
    parts = []
    for part in path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
            continue
        text = str(part)
        if not text or any(c in text for c in ".[]\"' #"):
            text = '"' + text.replace('"', '\\"') + '"'
        parts.append(("." if parts else "") + text)
    return "".join(parts)


def parse_yaml(text: str, file: str | None = None) -> Located:
    """Parse one YAML document with the safe loader, keeping marks; RuleLoadError on failure
    (an alias bomb included: engine.support.safeyaml)."""
    try:
        node = safeyaml.compose(text, file=file)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise RuleLoadError(
            f"invalid YAML: {exc.problem or exc.context}",
            file=file,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from None
    except yaml.YAMLError as exc:
        raise RuleLoadError(f"invalid YAML: {exc}", file=file) from None
    except YamlLimitError as exc:
        raise RuleLoadError(exc.message, file=file, line=exc.line, column=exc.column) from None
    if node is None:
        return Located(None, {}, file)
    try:
        data = safeyaml.construct(node, file=file)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise RuleLoadError(
            f"invalid YAML: {exc.problem}",
            file=file,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from None
    except YamlLimitError as exc:
        raise RuleLoadError(exc.message, file=file, line=exc.line, column=exc.column) from None
    marks: dict[Path, tuple[int, int]] = {}
    _collect_marks(node, (), marks)
    return Located(data, marks, file)


def _collect_marks(node: yaml.Node, path: Path, marks: dict[Path, tuple[int, int]]) -> None:
    marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = _scalar_key(key_node)
                _collect_marks(value_node, (*path, key), marks)
                # Errors about the key itself (unknown key) point at the key.
                marks[(*path, key, KEY)] = (
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                )
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _collect_marks(item, (*path, index), marks)


def _scalar_key(node: yaml.ScalarNode) -> Any:
    # Keys are resolved as the safe constructor would (so `1: x` is int 1, `on: x` True).
    tag = node.tag
    value = node.value
    if tag == "tag:yaml.org,2002:int":
        try:
            return int(value, 0)
        except ValueError:
            return value
    if tag == "tag:yaml.org,2002:bool":
        return value.lower() in ("yes", "true", "on", "y")
    if tag == "tag:yaml.org,2002:null":
        return None
    return value


# How alike a name and a known one must be (difflib's ratio) to be offered as a fix. At
# difflib's default 0.6, 'orquesta' got 'http-request': a suggestion that is not a likely
# typo sends the author the wrong way.
SUGGESTION_CUTOFF = 0.75


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The known name `word` most likely mistypes, or None when none is close.

    Dotted names are compared past the dotted prefix they share, so two refs of one pack
    (`core.st2.generic.actiontrigger`, `core.st2.CronTimer`) are not alike for their
    common `core.st2.`.
    """
    best, best_ratio = None, SUGGESTION_CUTOFF
    for choice in choices:
        if choice == word:
            return choice
        shared = _shared_dotted_prefix(word, choice)
        ratio = difflib.SequenceMatcher(None, word[shared:], choice[shared:]).ratio()
        if ratio >= best_ratio and (best is None or ratio > best_ratio):
            best, best_ratio = choice, ratio
    return best


def _shared_dotted_prefix(a: str, b: str) -> int:
    end = 0
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            break
        if x == ".":
            end = index + 1
    return end


def suggestion(word: str, choices: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the closest choice, or an empty string."""
    close = closest(word, choices)
    return f"; did you mean {close!r}?" if close is not None else ""


def type_name(value: Any) -> str:
    """How an error message names the type of a YAML value."""
    return {
        type(None): "null",
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)
