"""The criteria operators: StackStorm's whole table, its aliases and its semantics.

Each operator is ``func(value, pattern) -> bool`` (``search`` also takes a condition and
a per-item check supplied by the evaluator). Results follow StackStorm's
``st2common/operators.py`` exactly, including its quirks: a None pattern is False for
every operator but ``nequals`` and the existence tests; bytes are decoded as UTF-8 for
the string operators but not for ``lessthan``/``greaterthan``; ``contains`` on a list
tests membership. Where StackStorm would raise (and its filter silently log and fail the
criterion), these operators raise CriterionTypeError with a readable reason instead, so
the evaluator fails the criterion *and* records why.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.errors import CriterionTypeError, RegistryError, RuleError, UnknownOperatorError
from engine.rules import regexes
from engine.rules.yamlsource import closest, suggestion

__all__ = [
    "SEARCH_CONDITIONS",
    "Operator",
    "get_operator",
    "operator_names",
    "validate_search_condition",
]


@dataclass(frozen=True)
class Operator:
    name: str
    aliases: tuple[str, ...]
    # (value, pattern) -> bool; for search: (value, pattern, condition, check_item) -> bool
    func: Callable[..., bool]
    takes_pattern: bool = True
    is_search: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


# --- helpers -----------------------------------------------------------------


def _describe(thing: Any) -> str:
    if thing is None:
        return "None"
    text = repr(thing)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(thing).__name__} {text}"


def _decode(op: str, role: str, thing: Any) -> Any:
    # StackStorm's ensure_operators_are_strings: bytes become str, nothing else changes.
    if type(thing) is bytes:
        try:
            return thing.decode("utf-8")
        except UnicodeDecodeError as error:
            raise CriterionTypeError(
                f"{op}: the {role} is bytes that are not UTF-8 ({error})"
            ) from None
    return thing


def _strings(op: str, value: Any, pattern: Any) -> tuple[str, str]:
    value = _decode(op, "value", value)
    pattern = _decode(op, "pattern", pattern)
    if not isinstance(value, str):
        raise CriterionTypeError(
            f"{op} needs a string value, got {_describe(value)} (pattern {_describe(pattern)})"
        )
    if not isinstance(pattern, str):
        raise CriterionTypeError(
            f"{op} needs a string pattern, got {_describe(pattern)} (value {_describe(value)})"
        )
    return value, pattern


def _regex(op: str, pattern: str, value: str, flags: int, *, anchored: bool) -> bool:
    try:
        if anchored:
            return regexes.match(pattern, value, flags) is not None
        return regexes.search(pattern, value, flags) is not None
    except regexes.PatternError as error:
        raise CriterionTypeError(
            f"{op} pattern {pattern!r} is not a valid regular expression: {error}"
        ) from None
    except regexes.RegexTimedOut as error:
        raise CriterionTypeError(f"{op}: {error}") from None


# --- equality ------------------------------------------------------------------


def equals(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    return _decode("equals", "value", value) == _decode("equals", "pattern", pattern)


def nequals(value: Any, pattern: Any) -> bool:
    # No None guard in StackStorm: nequals(x, None) is simply x != None.
    return _decode("nequals", "value", value) != _decode("nequals", "pattern", pattern)


def iequals(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _strings("iequals", value, pattern)
    return value.lower() == pattern.lower()


# --- containment -----------------------------------------------------------------


def _membership(op: str, needle: Any, haystack: Any, needle_role: str) -> bool:
    try:
        return needle in haystack
    except TypeError:
        if needle_role == "pattern":
            what = f"look for pattern {_describe(needle)} in value {_describe(haystack)}"
        else:
            what = f"look for value {_describe(needle)} in pattern {_describe(haystack)}"
        raise CriterionTypeError(f"{op} cannot {what}") from None


def contains(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value = _decode("contains", "value", value)
    pattern = _decode("contains", "pattern", pattern)
    return _membership("contains", pattern, value, "pattern")


def ncontains(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value = _decode("ncontains", "value", value)
    pattern = _decode("ncontains", "pattern", pattern)
    return not _membership("ncontains", pattern, value, "pattern")


def icontains(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _strings("icontains", value, pattern)
    return pattern.lower() in value.lower()


def incontains(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _strings("incontains", value, pattern)
    return pattern.lower() not in value.lower()


def inside(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value = _decode("inside", "value", value)
    pattern = _decode("inside", "pattern", pattern)
    return _membership("inside", value, pattern, "value")


def ninside(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value = _decode("ninside", "value", value)
    pattern = _decode("ninside", "pattern", pattern)
    return not _membership("ninside", value, pattern, "value")


# --- prefixes and suffixes ----------------------------------------------------------


def startswith(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _strings("startswith", value, pattern)
    return value.startswith(pattern)


def istartswith(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _strings("istartswith", value, pattern)
    return value.lower().startswith(pattern.lower())


def endswith(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _strings("endswith", value, pattern)
    return value.endswith(pattern)


def iendswith(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _strings("iendswith", value, pattern)
    return value.lower().endswith(pattern.lower())


# --- ordering ----------------------------------------------------------------------


def _compare(op: str, value: Any, pattern: Any, less: bool) -> bool:
    # StackStorm compares with Python's < and > as they are: no bytes decoding, no
    # number parsing, so '5' < 3 is a type mismatch rather than a silent coercion.
    try:
        return value < pattern if less else value > pattern
    except TypeError:
        raise CriterionTypeError(
            f"{op} cannot compare {_describe(value)} with {_describe(pattern)}"
        ) from None


def less_than(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    return _compare("lessthan", value, pattern, less=True)


def greater_than(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    return _compare("greaterthan", value, pattern, less=False)


# --- patterns ------------------------------------------------------------------------


def match_wildcard(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _strings("matchwildcard", value, pattern)
    # fnmatchcase: StackStorm's fnmatch is case-sensitive on the POSIX hosts it runs on.
    return fnmatch.fnmatchcase(value, pattern)


def match_regex(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _strings("matchregex", value, pattern)
    return _regex("matchregex", pattern, value, regexes.DOTALL, anchored=True)


def regex(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _strings("regex", value, pattern)
    return _regex("regex", pattern, value, 0, anchored=False)


def iregex(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _strings("iregex", value, pattern)
    return _regex("iregex", pattern, value, regexes.IGNORECASE, anchored=False)


# --- time ---------------------------------------------------------------------------


def _seconds_since(op: str, value: Any, now: datetime | None) -> float:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise CriterionTypeError(
                f"{op} cannot read {value!r} as an ISO 8601 timestamp (e.g. 2024-05-01T12:00:00Z)"
            ) from None
    else:
        raise CriterionTypeError(f"{op} needs an ISO 8601 timestamp value, got {_describe(value)}")
    # Like StackStorm, a timestamp without a zone is taken to be UTC.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return ((now or datetime.now(UTC)) - moment).total_seconds()


def _timediff(op: str, value: Any, pattern: Any, less: bool, now: datetime | None) -> bool:
    if pattern is None:
        return False
    age = _seconds_since(op, value, now)
    seconds = _seconds_pattern(op, pattern)
    return age < seconds if less else age > seconds


def _seconds_pattern(op: str, pattern: Any) -> float:
    """The pattern as a number of seconds. StackStorm's web UI sends criteria patterns as
    strings ("10"), so a string holding a finite number counts as that number."""
    if isinstance(pattern, int | float) and not isinstance(pattern, bool):
        number = float(pattern)
    elif isinstance(pattern, str):
        try:
            number = float(pattern.strip())
        except ValueError:
            number = math.nan
    else:
        number = math.nan
    if not math.isfinite(number):
        raise CriterionTypeError(
            f"{op} needs a number of seconds as pattern, got {_describe(pattern)}"
        )
    return number


def timediff_lt(value: Any, pattern: Any, *, now: datetime | None = None) -> bool:
    """True when the timestamp ``value`` is less than ``pattern`` seconds old."""
    return _timediff("timediff_lt", value, pattern, less=True, now=now)


def timediff_gt(value: Any, pattern: Any, *, now: datetime | None = None) -> bool:
    """True when the timestamp ``value`` is more than ``pattern`` seconds old."""
    return _timediff("timediff_gt", value, pattern, less=False, now=now)


# --- existence ----------------------------------------------------------------------


def exists(value: Any, pattern: Any = None) -> bool:
    return value is not None


def nexists(value: Any, pattern: Any = None) -> bool:
    return value is None


# --- search -------------------------------------------------------------------------

SEARCH_CONDITIONS = ("any", "all", "any2any", "all2any")

CheckItem = Callable[[Any, str, Mapping[str, Any]], bool]


def validate_search_condition(condition: Any) -> str:
    """Return the condition if ``search`` knows it, else raise RuleError naming the valid ones."""
    if condition in SEARCH_CONDITIONS:
        return condition
    valid = ", ".join(SEARCH_CONDITIONS)
    if condition is None:
        raise RuleError(f"search needs a condition: one of {valid}")
    hint = suggestion(str(condition).lower(), SEARCH_CONDITIONS)
    raise RuleError(f"unknown search condition {condition!r}; valid conditions: {valid}{hint}")


def search(value: Any, pattern: Any, condition: Any, check_item: CheckItem) -> bool:
    """Match a list against child criteria (keys ``item.<field>``).

    any: some item passes every child; all: every item passes every child;
    any2any: some item passes some child; all2any: every item passes some child.
    As in StackStorm an empty list passes ``all`` and ``all2any`` and fails the others.
    ``check_item(item, child_key, child_criterion)`` must return a bool (a child criterion
    that errors is a failed child).
    """
    condition = validate_search_condition(condition)
    if not isinstance(value, list | tuple):
        raise CriterionTypeError(f"search needs a list value, got {_describe(value)}")
    if not isinstance(pattern, Mapping):
        raise CriterionTypeError(
            "search needs a pattern mapping child keys (item.<field>) to criteria, "
            f"got {_describe(pattern)}"
        )
    children = tuple(pattern.items())

    def passes_all(item: Any) -> bool:
        return all(check_item(item, key, criterion) for key, criterion in children)

    def passes_some(item: Any) -> bool:
        return any(check_item(item, key, criterion) for key, criterion in children)

    if condition == "any":
        return any(passes_all(item) for item in value)
    if condition == "all":
        return all(passes_all(item) for item in value)
    if condition == "any2any":
        return any(passes_some(item) for item in value)
    return all(passes_some(item) for item in value)


# --- registry -----------------------------------------------------------------------

_REGISTRY: dict[str, Operator] = {}


def _register(operator: Operator) -> Operator:
    for name in operator.names:
        if name != name.lower():
            raise RegistryError(f"operator name {name!r} must be lower case")
        if name in _REGISTRY:
            raise RegistryError(
                f"operator name {name!r} of {operator.name!r} is already taken by "
                f"{_REGISTRY[name].name!r}"
            )
    for name in operator.names:
        _REGISTRY[name] = operator
    return operator


for _operator in (
    Operator("equals", ("eq",), equals),
    Operator("nequals", ("neq",), nequals),
    Operator("iequals", ("ieq",), iequals),
    Operator("contains", (), contains),
    Operator("ncontains", (), ncontains),
    Operator("icontains", (), icontains),
    Operator("incontains", (), incontains),
    Operator("startswith", (), startswith),
    Operator("istartswith", (), istartswith),
    Operator("endswith", (), endswith),
    Operator("iendswith", (), iendswith),
    Operator("lessthan", ("lt",), less_than),
    Operator("greaterthan", ("gt",), greater_than),
    Operator("matchwildcard", (), match_wildcard),
    Operator("matchregex", (), match_regex),
    Operator("regex", (), regex),
    Operator("iregex", (), iregex),
    Operator("timediff_lt", ("td_lt",), timediff_lt),
    Operator("timediff_gt", ("td_gt",), timediff_gt),
    Operator("exists", (), exists, takes_pattern=False),
    Operator("nexists", (), nexists, takes_pattern=False),
    Operator("inside", ("in",), inside),
    Operator("ninside", ("nin",), ninside),
    Operator("search", (), search, is_search=True),
):
    _register(_operator)
del _operator


def get_operator(name: str) -> Operator:
    """Look an operator up by name or alias, ignoring case."""
    if not isinstance(name, str):
        raise UnknownOperatorError(f"operator must be a name, got {_describe(name)}")
    operator = _REGISTRY.get(name.lower())
    if operator is not None:
        return operator
    close = closest(name.lower(), _REGISTRY)
    if close is not None:
        raise UnknownOperatorError(f"unknown operator {name!r}; did you mean {close!r}?")
    known = ", ".join(operator_names())
    raise UnknownOperatorError(f"unknown operator {name!r}; known operators: {known}")


def operator_names() -> list[str]:
    """Every canonical name and alias, sorted."""
    return sorted(_REGISTRY)
