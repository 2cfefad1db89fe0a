"""Field addressing: turn a criteria key into a fast lookup over an evaluation context.

A key's first segment names a root of the context mapping: ``trigger`` for rule criteria
(context ``{"trigger": payload}``), ``item`` for the child criteria of ``search`` (context
``{"item": element}``). Every form StackStorm accepts is a *plain* path, compiled into a
tuple of steps and walked without parsing at evaluation time:

    trigger.body.x                      trigger.headers['X-Custom-Header']
    trigger.headers["X-Custom-Header"]  trigger.list[0]   trigger.list[-1]
    trigger.headers.X-Github-Event      trigger.body.commits[0].author.name
    trigger.list.0                      (digits after a dot: list index or "0" key)

Keys that need more than traversal (filters ``[?x=='a']``, functions ``length(...)``,
projections ``[*]``, pipes) are compiled once as JMESPath expressions over the same
context. A missing field (missing key, index out of range, traversing a scalar) is None.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

import jmespath
import jmespath.exceptions

from engine.errors import FieldPathError

__all__ = ["FieldLookup", "compile_key", "strip_suffix"]

FieldLookup = Callable[[Mapping[str, Any]], Any]

# A bare segment: StackStorm (jsonpath-rw) names plus dashes, so header names such as
# X-Github-Event need no quotes. All-digit segments are handled as indexes.
_NAME = re.compile(r"[A-Za-z0-9_$-]+")
_INDEX = re.compile(r"\s*(-?\d+)\s*")
# Characters that only JMESPath gives a meaning to; a key containing one is reported
# with JMESPath's error rather than the plain-path one when neither parser accepts it.
_JMESPATH_ONLY = re.compile(r"[?*|&!(){}@`:]|\[\]")


class _DigitSegment:
    """A dotted all-digit segment (``list.0``): a key ``"0"`` in a mapping, an index in a list."""

    __slots__ = ("index", "key")

    def __init__(self, text: str) -> None:
        self.key = text
        self.index = int(text)


def strip_suffix(key: str) -> str:
    """Drop a criteria tag: ``trigger.n#1`` -> ``trigger.n``.

    StackStorm ignores ``#`` and what follows so one field can be tested twice. A ``#``
    inside a quoted segment (``trigger.headers['a#b']``) is part of the name, not a tag.
    """
    if "#" not in key:
        return key
    quote = ""
    escaped = False
    for position, char in enumerate(key):
        if escaped:
            escaped = False
        elif quote:
            if char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#":
            return key[:position]
    return key


@functools.lru_cache(maxsize=8192)
def compile_key(key: str) -> FieldLookup:
    """Compile a criteria key (its ``#`` tag stripped) into ``lookup(context) -> value``.

    Raises FieldPathError when the key is neither a plain path nor a JMESPath expression.
    """
    if not isinstance(key, str):
        raise FieldPathError(f"criteria key {key!r} must be a string")
    path = strip_suffix(key).strip()
    if not path:
        raise FieldPathError(f"criteria key {key!r} is empty; expected a path like trigger.body.x")
    try:
        steps = _parse_plain(path)
    except _PlainSyntaxError as plain_error:
        try:
            expression = jmespath.compile(path)
        except jmespath.exceptions.JMESPathError as jmespath_error:
            if _JMESPATH_ONLY.search(path):
                reason = f"invalid JMESPath expression: {_one_line(jmespath_error)}"
            else:
                reason = str(plain_error)
            raise FieldPathError(f"criteria key {key!r} cannot be parsed: {reason}") from None
        return _jmespath_lookup(expression)
    return _plain_lookup(steps)


class _PlainSyntaxError(Exception):
    """Raised internally when a key is not a plain path (it may still be JMESPath)."""


def _parse_plain(path: str) -> tuple[str | int | _DigitSegment, ...]:
    steps: list[str | int | _DigitSegment] = []
    position = 0
    length = len(path)
    expect_segment = True  # at the start and after a dot a name must follow
    while position < length:
        char = path[position]
        if expect_segment:
            if char in "'\"":
                name, position = _read_quoted(path, position)
                steps.append(name)
            else:
                match = _NAME.match(path, position)
                if match is None:
                    what = "a dot" if char == "." else repr(char)
                    raise _PlainSyntaxError(
                        f"expected a field name at position {position}, found {what}"
                    )
                text = match.group()
                if text.isdigit() and steps:
                    steps.append(_DigitSegment(text))
                else:
                    steps.append(text)
                position = match.end()
            expect_segment = False
        elif char == ".":
            expect_segment = True
            position += 1
        elif char == "[":
            closing = path.find("]", position)
            inner_start = position + 1
            while inner_start < length and path[inner_start] == " ":
                inner_start += 1
            if inner_start < length and path[inner_start] in "'\"":
                name, after = _read_quoted(path, inner_start)
                while after < length and path[after] == " ":
                    after += 1
                if after >= length or path[after] != "]":
                    raise _PlainSyntaxError(f"expected ']' at position {after}")
                steps.append(name)
                position = after + 1
                continue
            if closing == -1:
                raise _PlainSyntaxError(f"unclosed '[' at position {position}")
            index = _INDEX.fullmatch(path, inner_start, closing)
            if index is None:
                inside = path[position + 1 : closing]
                raise _PlainSyntaxError(
                    f"[{inside}] at position {position} is neither a list index nor a quoted name"
                )
            steps.append(int(index.group(1)))
            position = closing + 1
        else:
            raise _PlainSyntaxError(f"unexpected {char!r} at position {position}")
    if expect_segment:
        raise _PlainSyntaxError("the key ends with a dot; a field name must follow it")
    if not isinstance(steps[0], str):
        raise _PlainSyntaxError("the key must start with a root name such as trigger or item")
    return tuple(steps)


def _read_quoted(path: str, start: int) -> tuple[str, int]:
    quote = path[start]
    chars: list[str] = []
    position = start + 1
    while position < len(path):
        char = path[position]
        if char == "\\" and position + 1 < len(path):
            chars.append(path[position + 1])
            position += 2
            continue
        if char == quote:
            return "".join(chars), position + 1
        chars.append(char)
        position += 1
    raise _PlainSyntaxError(f"unclosed quote {quote} starting at position {start}")


def _plain_lookup(steps: tuple[str | int | _DigitSegment, ...]) -> FieldLookup:
    if all(type(step) is str for step in steps):
        names: tuple[str, ...] = steps  # type: ignore[assignment]

        # The hot path: only mapping lookups. Subscripting a str, list or number with a
        # str raises TypeError; a missing key raises KeyError; both mean "no such field".
        def lookup_names(context: Mapping[str, Any]) -> Any:
            value: Any = context
            for name in names:
                try:
                    value = value[name]
                except (KeyError, TypeError, IndexError):
                    return None
            return value

        return lookup_names

    def lookup_steps(context: Mapping[str, Any]) -> Any:
        value: Any = context
        for step in steps:
            if type(step) is str:
                if not isinstance(value, Mapping):
                    return None
                value = value.get(step)
            elif type(step) is int:
                # Only real sequences are indexed: "abc"[0] and {0: ...}[0] are not fields.
                if not isinstance(value, list | tuple):
                    return None
                try:
                    value = value[step]
                except IndexError:
                    return None
            else:
                digit: _DigitSegment = step  # type: ignore[assignment]
                if isinstance(value, Mapping):
                    value = value.get(digit.key)
                elif isinstance(value, list | tuple) and digit.index < len(value):
                    value = value[digit.index]
                else:
                    return None
            if value is None:
                return None
        return value

    return lookup_steps


def _jmespath_lookup(expression: Any) -> FieldLookup:
    def lookup_expression(context: Mapping[str, Any]) -> Any:
        try:
            return expression.search(context)
        except jmespath.exceptions.JMESPathError:
            # e.g. length(trigger.missing): a function applied to a missing field is a
            # missing value, like any other lookup that finds nothing.
            return None

    return lookup_expression


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
