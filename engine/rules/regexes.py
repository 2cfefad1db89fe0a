"""Regular expressions in rules and templates: compiled once, stopped when they run long.

Patterns come from rule authors and the strings they are matched against from webhook
senders. A pattern that backtracks catastrophically on some input (``(a+)+$`` against
``"aaaa…!"``, a ReDoS) would hold the event loop — ingest included — for as long as it
runs, minutes or more. The ``regex`` module (drop-in compatible with ``re`` in its default
V0 mode) can abandon a match after a time limit: a match that runs out raises
`RegexTimedOut`, which fails the criterion or the template with a reason instead.
"""

from __future__ import annotations

import functools

import regex

from engine.errors import RuleError

# A legitimate pattern takes micro- to milliseconds even on a large payload value.
TIMEOUT_SECONDS = 0.1

IGNORECASE = regex.IGNORECASE
DOTALL = regex.DOTALL
# Raised for an invalid pattern (a subclass of Exception with a readable message).
PatternError = regex.error


class RegexTimedOut(RuleError):
    """A match ran past TIMEOUT_SECONDS (catastrophic backtracking, most likely)."""


@functools.lru_cache(maxsize=2048)
def compiled(pattern: str, flags: int = 0) -> regex.Pattern:
    """The compiled pattern; raises PatternError when it is not a valid expression."""
    return regex.compile(pattern, flags)


def match(pattern: str, value: str, flags: int = 0) -> regex.Match | None:
    return _bounded(pattern, value, lambda p: p.match(value, timeout=TIMEOUT_SECONDS), flags)


def search(pattern: str, value: str, flags: int = 0) -> regex.Match | None:
    return _bounded(pattern, value, lambda p: p.search(value, timeout=TIMEOUT_SECONDS), flags)


def sub(pattern: str, replacement: str, value: str, flags: int = 0) -> str:
    return _bounded(
        pattern, value, lambda p: p.sub(replacement, value, timeout=TIMEOUT_SECONDS), flags
    )


def _bounded(pattern: str, value: str, run, flags: int):
    try:
        return run(compiled(pattern, flags))
    except TimeoutError:
        raise RegexTimedOut(
            f"pattern {pattern!r} ran longer than {TIMEOUT_SECONDS:g}s on a value of "
            f"{len(value)} characters and was stopped (catastrophic backtracking?)"
        ) from None
