"""Compiled criteria and their evaluation with a trace.

A criterion is compiled once at load time (field getter, operator, pattern template,
search children) so that evaluating one costs a getter call, an optional render and an
operator call. Evaluation never raises for bad data: a type mismatch or a pattern that
fails to render makes the criterion fail, with the reason in the trace.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import RuleError, TemplateError
from engine.rules.operators import Operator
from engine.rules.templates import Template

Getter = Callable[[Mapping[str, Any]], Any]

# Values longer than this are cut in traces: a trace explains, it does not archive.
TRACE_VALUE_LIMIT = 512


@dataclass(frozen=True, slots=True)
class CriterionResult:
    key: str
    operator: str
    pattern: Any
    value: Any
    passed: bool
    reason: str | None = None
    # True when the criterion could not be evaluated (type mismatch, pattern render
    # failure), as opposed to evaluating to false.
    error: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "operator": self.operator,
            "pattern": _traceable(self.pattern),
            "value": _traceable(self.value),
            "passed": self.passed,
            "reason": self.reason,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Criterion:
    key: str
    getter: Getter
    operator: Operator
    pattern: Any
    # Set when the pattern is a Jinja template rendered against the payload per event.
    pattern_template: Template | None = None
    condition: str | None = None
    # Search criteria: child key (item.x) -> compiled child criterion.
    children: Mapping[str, Criterion] | None = None

    def evaluate(self, context: Mapping[str, Any]) -> CriterionResult:
        """Evaluate against `context` ({"trigger": payload, "st2kv": ...})."""
        value = self.getter(context)
        pattern = self.pattern
        if self.pattern_template is not None:
            try:
                pattern = self.pattern_template.render(context)
            except TemplateError as exc:
                return CriterionResult(
                    self.key,
                    self.operator.name,
                    self.pattern,
                    value,
                    False,
                    f"pattern did not render: {exc}",
                )
        try:
            if self.operator.is_search:
                passed = self.operator.func(value, pattern, self.condition, self._check_item)
            else:
                passed = self.operator.func(value, pattern)
        except RuleError as exc:  # CriterionTypeError and search condition errors
            return CriterionResult(
                self.key, self.operator.name, pattern, value, False, str(exc), True
            )
        if passed:
            return CriterionResult(self.key, self.operator.name, pattern, value, True)
        return CriterionResult(
            self.key, self.operator.name, pattern, value, False, _why_not(self, value)
        )

    def _check_item(self, item: Any, child_key: str, _child_spec: Any) -> bool:
        child = self.children[child_key] if self.children else None
        if child is None:
            return False
        return child.evaluate({"item": item}).passed


def _why_not(criterion: Criterion, value: Any) -> str:
    if value is None and criterion.operator.name not in ("nexists",):
        return f"{criterion.key} is missing or null"
    return f"{criterion.operator.name} did not hold"


def _traceable(value: Any) -> Any:
    """JSON-friendly and bounded: long strings are cut, bytes decoded, others kept."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and len(value) > TRACE_VALUE_LIMIT:
        return value[:TRACE_VALUE_LIMIT] + f"... ({len(value)} characters)"
    if isinstance(value, dict | list) and len(repr(value)) > TRACE_VALUE_LIMIT * 4:
        return repr(value)[:TRACE_VALUE_LIMIT] + "... (truncated)"
    return value
