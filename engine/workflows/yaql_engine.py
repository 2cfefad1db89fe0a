"""YAQL (the ``<% %>`` language of Orquesta) through the yaql library, bounded.

yaql 3.x reaches ``collections.abc`` through ``import collections`` alone, which works
only once something has imported ``collections.abc``; it is imported first here.

Bounds, because an author's expression meets data a sender controls:
- yaql's own options: no collection past `MAX_COLLECTION` items reaches a function or
  the result, no function result past `MEMORY_QUOTA` bytes (strings are sized before
  they are built);
- the functions that make sequences from nothing (``range``, ``sequence``, ``repeat``,
  ``cycle``), ``pow``, and the string builders that allocate in one step (``join``,
  ``replace``) are replaced by bounded ones;
- every evaluation has `MAX_SECONDS` of Python work and may grow the process by at most
  `MAX_GROWTH_BYTES` (a profile hook counts calls, checks the clock and the resident
  size), which stops products of nested ``select``/``selectMany``;
- a value passed to a function or returned may stand for at most `MAX_VALUE_CHARS` once
  written out (one big string referenced 100,000 times is refused before any function
  writes it out 100,000 times);
- yaql's regular-expression library is left out (Python's ``re`` cannot be stopped);
  the time-limited ``regex_match``/``regex_search``... of StackStorm stand in;
- no delegates and no Python objects: only data goes in, so no attribute is reachable.
"""

from __future__ import annotations

import collections.abc  # must precede yaql: see the module docstring
import contextlib
import inspect
import os
import sys
import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

import yaql
from yaql.language import exceptions as yaql_errors
from yaql.language import factory, specs, utils, yaqltypes

from engine.errors import WorkflowExpressionError
from engine.rules import regexes
from engine.workflows.context import CONTEXT_FUNCTIONS, ExpressionContext
from engine.workflows.functions import DATA_FUNCTIONS, MAX_VALUE_CHARS, check_written_size

__all__ = [
    "MAX_COLLECTION",
    "MAX_GROWTH_BYTES",
    "MAX_SECONDS",
    "MEMORY_QUOTA",
    "compile_yaql",
    "evaluate_yaql",
]

MAX_COLLECTION = 100_000
MEMORY_QUOTA = 16 << 20
MAX_SECONDS = 2.0
MAX_GROWTH_BYTES = 256 << 20
_MAX_POWER_BITS = 100_000
# The profile hook looks at the clock once per this many calls (keeps it cheap).
_CLOCK_EVERY = 512
_SCOPE_KEY = "__hookyard_scope"

_ENGINE = factory.YaqlFactory(allow_delegates=False).create(
    options={
        "yaql.limitIterators": MAX_COLLECTION,
        "yaql.memoryQuota": MEMORY_QUOTA,
        "yaql.convertInputData": True,
        "yaql.convertOutputData": True,
    }
)


class _OutOfTime(BaseException):
    """Raised inside an evaluation that ran out of time; a BaseException so that no
    ``except Exception`` inside yaql swallows it."""


class _OutOfMemory(BaseException):
    """Raised inside an evaluation that grew the process past `MAX_GROWTH_BYTES`."""


# --- the functions ---------------------------------------------------------------


class _Scope(yaqltypes.HiddenParameterType, yaqltypes.SmartType):
    """Hands a function the ExpressionContext of the evaluation it runs in."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(False)

    def convert(self, value: Any, receiver: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
        return context[_SCOPE_KEY]


def _parameter_type(name: str) -> Any:
    return _Scope() if name == "scope" else specs._infer_parameter_type(name)


def plain(value: Any) -> Any:
    """yaql's frozen data (FrozenDict, tuples) as plain dicts and lists, refused when it
    stands for more than MAX_VALUE_CHARS written out (shared parts counted each time).
    A value that is not JSON data (a datetime, a timespan) becomes its str: results are
    stored as JSON."""
    check_written_size(value)
    return _thawed(value, as_data=True)


def _materialized(value: Any) -> Any:
    if utils.is_iterator(value):
        return list(utils.limit_iterable(value, MAX_COLLECTION))
    return value


_JSON_SCALARS = (str, int, float, bool, type(None))


def _thawed(value: Any, as_data: bool = False) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, collections.abc.Mapping):
        return {_thawed(key, as_data): _thawed(item, as_data) for key, item in value.items()}
    if isinstance(value, tuple | list | frozenset | set):
        return [_thawed(item, as_data) for item in value]
    if as_data and not isinstance(value, _JSON_SCALARS):
        return str(value)
    return value


def _adapted(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` taking yaql's data as plain data and returning yaql's frozen data."""

    def adapted(*args: Any, **kwargs: Any) -> Any:
        # A lazy yaql sequence (select, where...) is read here, bounded like a result.
        args = tuple(_materialized(a) for a in args)
        kwargs = {key: _materialized(value) for key, value in kwargs.items()}
        room = MAX_VALUE_CHARS
        for argument in (*args, *kwargs.values()):
            if not isinstance(argument, ExpressionContext):
                room = check_written_size(argument, room)
        args = tuple(a if isinstance(a, ExpressionContext) else _thawed(a) for a in args)
        result = function(*args, **{key: _thawed(value) for key, value in kwargs.items()})
        return utils.convert_input_data(result)

    # yaql reads the parameters (names, defaults, which one is the scope) from this.
    adapted.__signature__ = inspect.signature(function)  # type: ignore[attr-defined]
    adapted.__name__ = function.__name__
    return adapted


def _bounded_count(name: str, count: int) -> None:
    if count > MAX_COLLECTION:
        raise WorkflowExpressionError(f"{name} of more than {MAX_COLLECTION:,} items is refused")


@specs.parameter("start", int)
@specs.parameter("stop", int, nullable=True)
@specs.parameter("step", int)
def _range(start: int, stop: int | None = None, step: int = 1) -> Iterator[int]:
    numbers = range(start) if stop is None else range(start, stop, step)
    _bounded_count("range()", len(numbers))
    return iter(numbers)


@specs.parameter("start", int)
@specs.parameter("step", int)
def _sequence(start: int = 0, step: int = 1) -> Iterator[int]:
    # Infinite in yaql; a Python generator here, so the clock sees every item.
    for index in range(MAX_COLLECTION):
        yield start + index * step
    _bounded_count("sequence()", MAX_COLLECTION + 1)


@specs.parameter("times", int)
def _repeat(value: Any, times: int = -1) -> list[Any]:
    _bounded_count("repeat()", MAX_COLLECTION + 1 if times < 0 else times)
    return [value] * times


@specs.parameter("collection", yaqltypes.Iterable())
def _cycle(collection: Any) -> Iterator[Any]:
    items = list(collection)
    produced = 0
    while items:
        for item in items:
            produced += 1
            _bounded_count("cycle()", produced)
            yield item


@specs.parameter("sequence", yaqltypes.Iterable())
@specs.parameter("separator", yaqltypes.String())
@specs.inject("str_delegate", yaqltypes.Delegate("str"))
@specs.method
def _join(sequence: Any, separator: str, str_delegate: Any) -> str:
    texts = [str_delegate(item) for item in sequence]
    _bounded_text("join()", sum(map(len, texts)) + len(separator) * max(len(texts) - 1, 0))
    return separator.join(texts)


@specs.parameter("sequence", yaqltypes.Iterable())
@specs.parameter("separator", yaqltypes.String())
@specs.inject("str_delegate", yaqltypes.Delegate("str"))
@specs.method
def _join_by(separator: str, sequence: Any, str_delegate: Any) -> str:
    return _join(sequence, separator, str_delegate)


@specs.parameter("string", yaqltypes.String())
@specs.parameter("old", yaqltypes.String())
@specs.parameter("new", yaqltypes.String())
@specs.parameter("count", int)
@specs.method
def _replace(string: str, old: str, new: str, count: int = -1) -> str:
    found = string.count(old) if old else len(string) + 1
    if count >= 0:
        found = min(found, count)
    _bounded_text("replace()", len(string) + found * max(len(new) - len(old), 0))
    return string.replace(old, new, count)


def _bounded_text(name: str, size: int) -> None:
    if size > MAX_VALUE_CHARS:
        raise WorkflowExpressionError(
            f"{name} would build more than {MAX_VALUE_CHARS:,} characters and was refused"
        )


def _pow(base: Any, exponent: Any, modulo: Any = None) -> Any:
    if (
        modulo is None
        and isinstance(base, int)
        and isinstance(exponent, int)
        and abs(base) > 1
        and exponent * abs(base).bit_length() > _MAX_POWER_BITS
    ):
        raise WorkflowExpressionError(f"pow({base}, {exponent}) is too large")
    return pow(base, exponent, modulo)


def _root_context() -> Any:
    # No delegates (calling values), no yaql regex (see the docstring).
    root = yaql.create_context(delegates=False, regex=False)
    ours = root.create_child_context()
    for name, function in CONTEXT_FUNCTIONS.items():
        ours.register_function(_adapted(function), name=name, parameter_type_func=_parameter_type)
    for name, function in DATA_FUNCTIONS.items():
        ours.register_function(_adapted(function), name=name)
    for name, function in (
        ("range", _range),
        ("sequence", _sequence),
        ("repeat", _repeat),
        ("cycle", _cycle),
        ("pow", _pow),
        ("join", _join),
        ("join", _join_by),
        ("replace", _replace),
    ):
        ours.register_function(function, name=name)
    return ours


_ROOT = _root_context()


# --- compiling and evaluating -----------------------------------------------------


@lru_cache(maxsize=4096)
def compile_yaql(source: str) -> Any:
    """The parsed expression (the text inside ``<% %>``); WorkflowExpressionError if invalid."""
    try:
        return _ENGINE(source)
    except (yaql_errors.YaqlException, ValueError, TypeError) as error:
        raise WorkflowExpressionError(
            f"YAQL syntax error in <% {source.strip()} %>: {_cause(error)}", source
        ) from None
    except RecursionError:
        raise WorkflowExpressionError(
            f"YAQL expression <% {_short(source)} %> is nested too deeply", source
        ) from None


def evaluate_yaql(source: str, scope: ExpressionContext) -> Any:
    """The value of one YAQL expression (the text inside ``<% %>``) in `scope`."""
    parsed = compile_yaql(source)
    context = _ROOT.create_child_context()
    context[_SCOPE_KEY] = scope
    shown = f"<% {_short(source)} %>"
    try:
        with regexes.budget(), _time_limit(MAX_SECONDS):
            # Orquesta's `$` is the workflow's variables (`<% $.name %>` is `ctx(name)`);
            # yaql copies them in frozen, so only for an expression that reads it.
            data = dict(scope.ctx) if "$" in source else utils.NO_VALUE
            result = parsed.evaluate(data=data, context=context)
            return plain(result)
    except _OutOfTime:
        raise WorkflowExpressionError(
            f"YAQL expression {shown} ran longer than {MAX_SECONDS:g}s and was stopped",
            source,
        ) from None
    except _OutOfMemory:
        raise WorkflowExpressionError(
            f"YAQL expression {shown} used more than {MAX_GROWTH_BYTES >> 20} MiB of memory "
            "and was stopped",
            source,
        ) from None
    except WorkflowExpressionError as error:  # a function's own error (task, st2kv...)
        raise _failed(shown, f"ExpressionEvaluationException: {error}", source) from None
    except yaql_errors.CollectionTooLargeException:
        raise _failed(
            shown, f"a collection of more than {MAX_COLLECTION:,} items is refused", source
        ) from None
    except yaql_errors.MemoryQuotaExceededException:
        raise _failed(
            shown, f"a value larger than {MEMORY_QUOTA:,} bytes is refused", source
        ) from None
    except RecursionError:
        raise _failed(shown, "nested too deeply", source) from None
    except KeyError as error:
        raise WorkflowExpressionError(
            f"YaqlEvaluationException: Unable to resolve key {error.args[0]!r} in expression "
            f"'{shown}' from context.",
            source,
        ) from None
    except MemoryError:
        # The step process's address-space limit (engine.workers.step_pool): it ends the
        # step, which names the limit, rather than this expression alone.
        raise
    except Exception as error:  # yaql, and the Python errors functions raise on bad data
        raise _failed(shown, f"{type(error).__name__}: {_cause(error)}", source) from None


def _failed(shown: str, cause: str, source: str) -> WorkflowExpressionError:
    # Orquesta's words, so a StackStorm user finds the message they know.
    return WorkflowExpressionError(
        f"YaqlEvaluationException: Unable to evaluate expression '{shown}'. {cause}", source
    )


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Stop the evaluation after `seconds` of work, or once it grew the process by
    `MAX_GROWTH_BYTES` (both checked every `_CLOCK_EVERY` Python and C calls)."""
    deadline = time.monotonic() + seconds
    resident_limit = _resident_bytes() + MAX_GROWTH_BYTES
    calls = 0

    def watch(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        calls += 1
        if calls % _CLOCK_EVERY == 0:
            if time.monotonic() > deadline:
                raise _OutOfTime
            if _resident_bytes() > resident_limit:
                raise _OutOfMemory

    previous = sys.getprofile()
    sys.setprofile(watch)
    try:
        yield
    finally:
        sys.setprofile(previous)


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _resident_bytes() -> int:
    """The process's resident size (Linux /proc); 0 where it cannot be read (no check)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return 0


def _cause(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _short(source: str) -> str:
    source = source.strip()
    return source if len(source) <= 200 else source[:200] + "..."
