"""The data functions StackStorm adds to Orquesta expressions, in both languages.

Semantics follow st2common/expressions/functions (data, path, regex, time, version) and
orquesta's common functions (json, zip), as StackStorm registers them for workflows:
``to_json_string`` has no indent by default here (the rule templates' filter indents by 4),
``json_escape`` strips the outer quotes, ``regex_substring`` indexes ``findall``.
Every function is bounded: YAML through engine.support.safeyaml, regular expressions through
engine.rules.regexes (time-limited), sizes checked before a large string is built.
"""

from __future__ import annotations

import datetime
import inspect
import json
import os.path
import re
from collections.abc import Callable, Mapping
from itertools import zip_longest
from typing import Any

import yaml

from engine.errors import WorkflowExpressionError, YamlLimitError
from engine.rules import regexes
from engine.support import safeyaml

__all__ = ["DATA_FUNCTIONS", "MAX_BUILT_CHARS", "MAX_VALUE_CHARS", "NONE_MARKER", "sized"]

#: Longest string a function may build (the same bound as a rendered template).
MAX_BUILT_CHARS = 1 << 20
_MAX_INDENT = 64
#: Most characters a function argument may stand for written out, shared parts counted
#: each time (one string referenced 100,000 times is written 100,000 times by json).
MAX_VALUE_CHARS = 16 << 20
# StackStorm's use_none marker: "this parameter is None", surviving string rendering.
NONE_MARKER = "%*****__%NONE%__*****%"


def _refuse_large(name: str, size: int) -> None:
    if size > MAX_BUILT_CHARS:
        raise WorkflowExpressionError(
            f"{name} would build more than {MAX_BUILT_CHARS:,} characters and was refused"
        )


def _indent(indent: Any) -> Any:
    if isinstance(indent, int) and indent > _MAX_INDENT:
        raise WorkflowExpressionError(f"an indent of more than {_MAX_INDENT} is refused")
    return indent


def check_written_size(value: Any, room: int = MAX_VALUE_CHARS) -> int:
    """What is left of `room` once `value` is written out; WorkflowExpressionError past it."""
    pending = [value]
    while pending:
        current = pending.pop()
        room -= len(current) if isinstance(current, str) else 8
        if room < 0:
            raise WorkflowExpressionError(
                f"a value of more than {MAX_VALUE_CHARS:,} characters (written out) is refused"
            )
        if isinstance(current, Mapping):
            pending.extend(current.keys())
            pending.extend(current.values())
        elif isinstance(current, list | tuple | set | frozenset):
            pending.extend(current)
    return room


def sized(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` refusing arguments that stand for more than MAX_VALUE_CHARS in all."""

    def checked(*args: Any, **kwargs: Any) -> Any:
        room = MAX_VALUE_CHARS
        for argument in (*args, *kwargs.values()):
            room = check_written_size(argument, room)
        return function(*args, **kwargs)

    checked.__signature__ = inspect.signature(function)  # type: ignore[attr-defined]
    checked.__name__ = function.__name__
    checked.__doc__ = function.__doc__
    return checked


# --- data --------------------------------------------------------------------------


def json_(value: Any) -> Any:
    """A mapping as is; a JSON string parsed."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        raise TypeError("json() takes a string or a mapping")
    return json.loads(value)


def zip_(*collections: Any, pad: Any = None) -> Any:
    """Orquesta's zip: lists of tuples padded with `pad`; one argument is returned as is."""
    lists = [[] if collection is None else list(collection) for collection in collections]
    if len(lists) == 1:
        return lists[0]
    longest = max((len(items) for items in lists), default=0)
    _refuse_large("zip()", longest * len(lists))
    return [list(row) for row in zip_longest(*lists, fillvalue=pad)]


def to_json_string(
    value: Any, indent: Any = None, sort_keys: bool = False, separators: Any = (",", ": ")
) -> str:
    return json.dumps(
        value,
        indent=_indent(indent),
        sort_keys=bool(sort_keys),
        separators=tuple(separators) if separators is not None else None,
    )


def from_json_string(value: Any) -> Any:
    return json.loads(str(value))


def to_yaml_string(value: Any, indent: Any = None, allow_unicode: bool = True) -> str:
    return yaml.safe_dump(
        value, indent=_indent(indent), allow_unicode=allow_unicode, default_flow_style=False
    )


def from_yaml_string(value: Any) -> Any:
    try:
        return safeyaml.safe_load(str(value))
    except YamlLimitError as error:
        raise WorkflowExpressionError(f"from_yaml_string: {error.message}") from None


def json_escape(value: Any) -> str:
    return json.dumps(value).strip('"')


def to_complex(value: Any) -> str:
    return json.dumps(value)


def use_none(value: Any) -> Any:
    return NONE_MARKER if value is None else value


# JSONPath steps of jsonpath_query: .name, ..name, .*, [n], ['name'], ["name"], [*].
_JSONPATH_STEP = re.compile(
    r"""\.\.(?P<deep>[\w-]+|\*)|\.(?P<name>[\w-]+|\*)|\[\s*(?:(?P<index>-?\d+)|'(?P<single>[^']*)'"""
    r"""|"(?P<double>[^"]*)"|(?P<all>\*))\s*\]"""
)


def jsonpath_query(value: Any, query: str) -> list[Any] | None:
    """The values `query` (JSONPath: ``$.a.b``, ``$.a[*].b``, ``$..b``, ``$.a[0]``) selects,
    or None when it selects nothing (StackStorm's jsonpath_query, common subset)."""
    text = str(query).strip()
    text = text[1:] if text.startswith("$") else "." + text if text[:1] not in ".[" else text
    matches = [value]
    position = 0
    while position < len(text):
        step = _JSONPATH_STEP.match(text, position)
        if step is None:
            raise ValueError(f"jsonpath_query cannot read {query!r} at {text[position:]!r}")
        position = step.end()
        matches = [found for current in matches for found in _jsonpath_step(current, step)]
        _refuse_large("jsonpath_query()", len(matches))
    return matches or None


def _jsonpath_step(current: Any, step: re.Match[str]) -> list[Any]:
    if step["deep"] is not None:
        return _descendants(current, step["deep"])
    if step["index"] is not None:
        index = int(step["index"])
        return (
            [current[index]]
            if isinstance(current, list) and -len(current) <= index < len(current)
            else []
        )
    if step["all"] is not None or step["name"] == "*":
        if isinstance(current, dict):
            return list(current.values())
        return list(current) if isinstance(current, list) else []
    key = next(k for k in (step["name"], step["single"], step["double"]) if k is not None)
    return [current[key]] if isinstance(current, dict) and key in current else []


def _descendants(current: Any, name: str) -> list[Any]:
    found: list[Any] = []
    pending = [current]
    while pending:
        node = pending.pop(0)
        if isinstance(node, dict):
            if name == "*":
                found.extend(node.values())
            elif name in node:
                found.append(node[name])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
        _refuse_large("jsonpath_query()", len(found) + len(pending))
    return found


# --- regular expressions (time-limited, engine.rules.regexes) -----------------------


def _flags(ignorecase: Any) -> int:
    return regexes.IGNORECASE if ignorecase else 0


def regex_match(value: Any, pattern: str, ignorecase: bool = False) -> bool:
    return regexes.match(pattern, str(value), _flags(ignorecase)) is not None


def regex_search(value: Any, pattern: str, ignorecase: bool = False) -> bool:
    return regexes.search(pattern, str(value), _flags(ignorecase)) is not None


def regex_replace(value: Any, pattern: str, replacement: str, ignorecase: bool = False) -> str:
    text = str(value)
    # The longest result: every position replaced (an empty pattern matches between chars).
    _refuse_large("regex_replace()", len(text) + (len(text) + 1) * len(str(replacement)))
    return regexes.sub(pattern, str(replacement), text, _flags(ignorecase))


def regex_substring(
    value: Any, pattern: str, result_index: int = 0, ignorecase: bool = False
) -> Any:
    text = str(value)
    compiled = regexes.compiled(pattern, _flags(ignorecase))
    try:
        found = compiled.findall(text, timeout=regexes.MATCH_SECONDS)
    except TimeoutError:
        raise WorkflowExpressionError(
            f"regex_substring: pattern {pattern!r} ran too long and was stopped"
        ) from None
    try:
        return found[result_index]
    except IndexError:
        raise WorkflowExpressionError(
            f"regex_substring: pattern {pattern!r} has no match {result_index} in the value"
        ) from None


# --- paths and time ---------------------------------------------------------------


def basename(path: Any) -> str:
    return os.path.basename(str(path))


def dirname(path: Any) -> str:
    return os.path.dirname(str(path))


def to_human_time_from_seconds(seconds: Any) -> str | None:
    """1h3m5s from 3785 (StackStorm's fuzzy form: years, days, hours, minutes, seconds)."""
    if seconds is None:
        return None
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        raise TypeError("to_human_time_from_seconds takes a number of seconds")
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds}\u03bcs"
    offset = datetime.datetime(1, 1, 1) + datetime.timedelta(seconds=round(seconds))
    parts = [offset.year - 1, offset.day - 1, offset.hour, offset.minute, offset.second]
    while parts and not parts[0]:
        parts.pop(0)
    units = ["y", "d", "h", "m", "s"][-len(parts) :]
    return "".join(f"{part}{unit}" for part, unit in zip(parts, units, strict=True))


# --- semantic versions (the subset of `semver` StackStorm's helpers use) -------------

_SEMVER = re.compile(
    r"\A(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>[0-9A-Za-z.-]+))?(?:\+(?P<build>[0-9A-Za-z.-]+))?\Z"
)
_COMPARISON = re.compile(r"\A(?P<op><=|>=|==|!=|<|>)(?P<version>.+)\Z")


def _parse_version(value: Any) -> tuple[int, int, int, str | None]:
    found = _SEMVER.match(str(value).strip())
    if found is None:
        raise ValueError(f"{value!r} is not a valid semantic version (MAJOR.MINOR.PATCH)")
    return int(found["major"]), int(found["minor"]), int(found["patch"]), found["pre"]


def _pre_key(pre: str | None) -> tuple:
    # A version without a pre-release ranks above every pre-release of it.
    if pre is None:
        return (1,)
    return (0, *((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")))


def version_compare(value: Any, pattern: Any) -> int:
    left, right = _parse_version(value), _parse_version(pattern)
    left_key = (*left[:3], _pre_key(left[3]))
    right_key = (*right[:3], _pre_key(right[3]))
    return (left_key > right_key) - (left_key < right_key)


def version_more_than(value: Any, pattern: Any) -> bool:
    return version_compare(value, pattern) == 1


def version_less_than(value: Any, pattern: Any) -> bool:
    return version_compare(value, pattern) == -1


def version_equal(value: Any, pattern: Any) -> bool:
    return version_compare(value, pattern) == 0


def version_match(value: Any, pattern: Any) -> bool:
    """`pattern` is a comparison such as ``>=1.2.0`` (semver's match)."""
    found = _COMPARISON.match(str(pattern).strip())
    if found is None:
        raise ValueError(f"{pattern!r} is not a comparison such as '>=1.2.0'")
    result = version_compare(value, found["version"])
    return {
        "<": result < 0,
        ">": result > 0,
        "<=": result <= 0,
        ">=": result >= 0,
        "==": result == 0,
        "!=": result != 0,
    }[found["op"]]


def version_bump_major(value: Any) -> str:
    major, _, _, _ = _parse_version(value)
    return f"{major + 1}.0.0"


def version_bump_minor(value: Any) -> str:
    major, minor, _, _ = _parse_version(value)
    return f"{major}.{minor + 1}.0"


def version_bump_patch(value: Any) -> str:
    major, minor, patch, _ = _parse_version(value)
    return f"{major}.{minor}.{patch + 1}"


def version_strip_patch(value: Any) -> str:
    major, minor, _, _ = _parse_version(value)
    return f"{major}.{minor}"


#: The functions of both languages that need no workflow state, by the name StackStorm
#: registers them under (aliases included: json_dump, json_parse, yaml_dump, yaml_parse).
DATA_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "json": json_,
    "zip": zip_,
    "to_json_string": to_json_string,
    "json_dump": to_json_string,
    "from_json_string": from_json_string,
    "json_parse": from_json_string,
    "to_yaml_string": to_yaml_string,
    "yaml_dump": to_yaml_string,
    "from_yaml_string": from_yaml_string,
    "yaml_parse": from_yaml_string,
    "json_escape": json_escape,
    "to_complex": to_complex,
    "use_none": use_none,
    "jsonpath_query": jsonpath_query,
    "regex_match": regex_match,
    "regex_search": regex_search,
    "regex_replace": regex_replace,
    "regex_substring": regex_substring,
    "basename": basename,
    "dirname": dirname,
    "to_human_time_from_seconds": to_human_time_from_seconds,
    "version_compare": version_compare,
    "version_more_than": version_more_than,
    "version_less_than": version_less_than,
    "version_equal": version_equal,
    "version_match": version_match,
    "version_bump_major": version_bump_major,
    "version_bump_minor": version_bump_minor,
    "version_bump_patch": version_bump_patch,
    "version_strip_patch": version_strip_patch,
}
