"""Regular expressions in rules, templates and parameter schemas: re's syntax, stopped
when they run too long.

Patterns come from rule and pack authors and the strings they are matched against from
webhook senders. A pattern that backtracks catastrophically on some input (``^(a|aa)+$``
against ``"aaaa…!"``, a ReDoS) would hold the event loop — ingest included — for as long
as it runs: hours. The ``regex`` module can abandon a match after a time limit; the
standard ``re`` module cannot. So:
- a pattern is first compiled by ``re``: what ``re`` refuses is refused, with its message,
  exactly as before (``regex`` accepts more, such as ``\\p{L}`` or inline flags mid-pattern);
- it is matched by ``regex`` in its re-compatible V0 mode, with a limit of
  `MATCH_SECONDS` plus `SECONDS_PER_MIB` for each MiB of the value;
- and all matches made while one rule evaluates (`budget`) share `BUDGET_SECONDS`, so a
  ``search`` criterion over thousands of list items cannot multiply the limit.
A match that runs out raises `RegexTimedOut`: the criterion, template or parameter fails
with that reason instead of stalling the process.

Known differences from ``re`` in what a valid pattern matches: ``[[:digit:]]`` is a POSIX
class (``re``: a set of those characters), ``{e}``-style suffixes are fuzzy-matching
constraints, ``\\w`` includes combining marks and ``\\s`` excludes ``\\x1c`` to ``\\x1f``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import regex

from engine.errors import RuleError

MATCH_SECONDS = 0.1
SECONDS_PER_MIB = 0.5
BUDGET_SECONDS = 0.5

IGNORECASE = regex.IGNORECASE
DOTALL = regex.DOTALL
_RE_FLAGS = {IGNORECASE: re.IGNORECASE, DOTALL: re.DOTALL}


class PatternError(RuleError):
    """The pattern is not a valid regular expression (``re``'s message)."""


class RegexTimedOut(RuleError):
    """A match ran past its limit (catastrophic backtracking, most likely)."""


# monotonic deadline shared by the matches of one evaluation (None: no budget running)
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "regex_deadline", default=None
)


@contextlib.contextmanager
def budget(seconds: float = BUDGET_SECONDS) -> Iterator[None]:
    """Let every match inside share `seconds` in all (an inner budget cannot extend it)."""
    outer = _deadline.get()
    deadline = time.monotonic() + seconds
    token = _deadline.set(deadline if outer is None else min(outer, deadline))
    try:
        yield
    finally:
        _deadline.reset(token)


@functools.lru_cache(maxsize=2048)
def compiled(pattern: str, flags: int = 0) -> regex.Pattern:
    """The compiled pattern; PatternError when ``re`` would not accept it."""
    re_flags = 0
    for ours, theirs in _RE_FLAGS.items():
        if flags & ours:
            re_flags |= theirs
    try:
        re.compile(pattern, re_flags)
        return regex.compile(pattern, flags | regex.VERSION0)
    except re.error as error:
        raise PatternError(str(error)) from None
    except (regex.error, RecursionError, OverflowError, MemoryError) as error:
        raise PatternError(f"too complex to compile ({type(error).__name__})") from None


def match(pattern: str, value: str, flags: int = 0) -> Any:
    return _bounded(pattern, value, flags, lambda p, limit: p.match(value, timeout=limit))


def search(pattern: str, value: str, flags: int = 0) -> Any:
    return _bounded(pattern, value, flags, lambda p, limit: p.search(value, timeout=limit))


def sub(pattern: str, replacement: str, value: str, flags: int = 0) -> str:
    return _bounded(
        pattern, value, flags, lambda p, limit: p.sub(replacement, value, timeout=limit)
    )


def _bounded(pattern: str, value: str, flags: int, run: Callable[[Any, float], Any]) -> Any:
    limit = MATCH_SECONDS + SECONDS_PER_MIB * len(value) / 1_048_576
    deadline = _deadline.get()
    if deadline is not None:
        limit = min(limit, deadline - time.monotonic())
        if limit <= 0:
            raise RegexTimedOut(
                f"pattern {pattern!r} was not tried: this evaluation's regular expressions "
                f"already took their {BUDGET_SECONDS:g}s"
            )
    compiled_pattern = compiled(pattern, flags)
    try:
        return run(compiled_pattern, limit)
    except TimeoutError:
        raise RegexTimedOut(
            f"pattern {pattern!r} ran longer than {limit:.2g}s on a value of "
            f"{len(value)} characters and was stopped (catastrophic backtracking?)"
        ) from None
    except (RecursionError, MemoryError) as error:
        raise RegexTimedOut(
            f"pattern {pattern!r} could not be matched ({type(error).__name__})"
        ) from None
