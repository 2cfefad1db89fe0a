"""A loaded rule and the result of evaluating it against one trigger payload."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.model.records import WEBHOOK_TRIGGER
from engine.rules import regexes
from engine.rules.criteria import Criterion, CriterionResult
from engine.rules.templates import Template

STANDARD = "standard"
BACKSTOP = "backstop"


@dataclass(frozen=True)
class Evaluation:
    matched: bool
    trace: list[CriterionResult]
    # Why the rule did not match when no criterion says it (disabled, backstop...).
    reason: str | None = None

    def trace_dicts(self) -> list[dict[str, Any]]:
        return [result.as_dict() for result in self.trace]

    @property
    def first_failure(self) -> CriterionResult | None:
        return next((r for r in self.trace if not r.passed), None)


@dataclass(frozen=True, eq=False)
class Rule:
    name: str
    pack: str
    trigger_type: str
    action_ref: str
    criteria: tuple[Criterion, ...] = ()
    trigger_parameters: Mapping[str, Any] = field(default_factory=dict)
    action_parameters: Mapping[str, Any] = field(default_factory=dict)
    description: str | None = None
    enabled: bool = True
    rule_type: str = STANDARD
    tags: tuple[Mapping[str, Any], ...] = ()
    context: Mapping[str, Any] = field(default_factory=dict)
    metadata_file: str | None = None
    once_per: Template | None = None
    # Where the rule came from: a file path (and line), or "api" for stored rules.
    source: str | None = None
    line: int | None = None
    # The line of each action parameter's value in `source` (for warnings).
    parameter_lines: Mapping[str, int] = field(default_factory=dict)
    # The line of each trigger parameter in `source` (for errors found once packs load).
    trigger_parameter_lines: Mapping[str, int] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.pack}.{self.name}"

    @property
    def id(self) -> str:
        return rule_id(self.ref)

    @property
    def webhook_url(self) -> str | None:
        """The named hook of a core.st2.webhook rule, slashes stripped as StackStorm does."""
        if self.trigger_type != WEBHOOK_TRIGGER:
            return None
        url = (self.trigger_parameters or {}).get("url")
        return normalize_webhook_name(str(url)) if url is not None else None

    def evaluate(
        self,
        payload: Any,
        *,
        kv: Any = None,
        stop_on_failure: bool = False,
    ) -> Evaluation:
        """Evaluate every criterion (ANDed) against `payload`; empty criteria match.

        `kv` is what `st2kv` resolves to in criteria patterns. With stop_on_failure the
        trace ends at the first failing criterion (the hot path of the rules worker).
        """
        if not self.enabled:
            return Evaluation(False, [], "rule is disabled")
        context = {"trigger": payload, "st2kv": kv}
        trace: list[CriterionResult] = []
        matched = True
        # One time budget for all the regular expressions of this rule and event.
        with regexes.budget():
            for criterion in self.criteria:
                result = criterion.evaluate(context)
                trace.append(result)
                if not result.passed:
                    matched = False
                    if stop_on_failure:
                        break
        return Evaluation(matched, trace)

    def render_once_per_key(self, payload: Any, *, kv: Any = None) -> str | None:
        if self.once_per is None:
            return None
        value = self.once_per.render({"trigger": payload, "st2kv": kv})
        return None if value is None else str(value)

    def to_api(self) -> dict[str, Any]:
        """StackStorm's RuleAPI shape (what `st2 rule get` prints)."""
        return {
            "id": self.id,
            "ref": self.ref,
            "uid": f"rule:{self.pack}:{self.name}",
            "name": self.name,
            "pack": self.pack,
            "description": self.description,
            "enabled": self.enabled,
            "trigger": {
                "type": self.trigger_type,
                "ref": self.trigger_type,
                "parameters": dict(self.trigger_parameters or {}),
            },
            "criteria": {c.key: _criterion_api(c) for c in self.criteria},
            "action": {"ref": self.action_ref, "parameters": dict(self.action_parameters or {})},
            "type": {"ref": self.rule_type, "parameters": {}},
            "tags": [dict(t) for t in self.tags],
            "context": dict(self.context or {}),
            "metadata_file": self.metadata_file,
            "once_per": self.once_per.source if self.once_per else None,
            "source": self.source,
        }


def _criterion_api(criterion: Criterion) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": criterion.operator.name, "pattern": criterion.pattern}
    if criterion.condition is not None:
        spec["condition"] = criterion.condition
    return spec


def rule_id(ref: str) -> str:
    """A rule's id: 24 hex digits (StackStorm ids are ObjectIds), the same across loads, as
    packs and actions have. Short whatever the ref's length, so a rule can always be named
    in a request line."""
    pack, _, name = ref.partition(".")  # a pack name has no dot
    return hashlib.sha1(f"rule:{pack}:{name}".encode()).hexdigest()[:24]


def is_rule_id(text: str) -> bool:
    return _RULE_ID.fullmatch(text) is not None


_RULE_ID = re.compile(r"[0-9a-f]{24}")


def normalize_webhook_name(name: str) -> str:
    return name.strip("/")
