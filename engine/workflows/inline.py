"""The inline ``name=value`` form of Orquesta: ``action: core.echo message="hi" n=3`` and
``publish: a=<% result() %> b=1``.

Values follow Orquesta's reading: a quoted value stays a string (unless it holds a JSON
object), an expression (``<% %>``, ``{{ }}``) is kept as its source text to be evaluated
later, a ``[...]`` list or a bare number, ``true``/``false`` (any case) or ``null`` is
read as JSON, and any other bare word is a string. Text that is not ``name=value`` is a
problem the caller reports (Orquesta drops it silently, which hides typos).
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["parse_inline"]

_NAME = re.compile(r"\s*(\w+)=")
_EXPRESSION_ENDS = {"<%": "%>", "{{": "}}"}


def parse_inline(text: str) -> tuple[list[tuple[str, Any]], list[str]]:
    """The (name, value) pairs of `text` in order, and a message per unreadable part."""
    pairs: list[tuple[str, Any]] = []
    problems: list[str] = []
    position = 0
    while position < len(text):
        if not text[position:].strip():
            break
        found = _NAME.match(text, position)
        if found is None:
            rest = text[position:].strip().split()[0]
            problems.append(f"{rest!r} is not of the form name=value")
            position = text.index(rest, position) + len(rest)
            continue
        name = found.group(1)
        value, position, problem = _read_value(text, found.end())
        if problem:
            problems.append(f"{name}: {problem}")
            break
        pairs.append((name, value))
    return pairs, problems


def _read_value(text: str, start: int) -> tuple[Any, int, str | None]:
    """The value starting at `start`, the position after it, and a problem if unreadable."""
    opener = text[start : start + 2]
    if opener in _EXPRESSION_ENDS:
        end = text.find(_EXPRESSION_ENDS[opener], start + 2)
        if end < 0:
            return None, len(text), f"the expression {opener} is never closed"
        end += 2
        return text[start:end], end, None
    first = text[start : start + 1]
    if first in ("'", '"'):
        end = text.find(first, start + 1)
        if end < 0:
            return None, len(text), f"the quote {first} is never closed"
        inner = text[start + 1 : end]
        return _quoted(inner), end + 1, None
    if first == "[":
        # As Orquesta: a list runs to the last ']' of the text.
        end = text.rfind("]") + 1
        return _json_or_text(text[start:end]), end, None
    end = start
    while end < len(text) and not text[end].isspace():
        end += 1
    return _json_or_text(text[start:end]), end, None


def _quoted(inner: str) -> Any:
    if inner.startswith("{") and inner.endswith("}"):
        return _json_or_text(inner)
    return inner


def _json_or_text(word: str) -> Any:
    candidate = word.lower() if word.lower() in ("true", "false") else word
    try:
        return json.loads(candidate)
    except ValueError:
        return word
