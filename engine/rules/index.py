"""RuleSet: rules indexed by trigger type (and webhook name) for matching.

Matching one trigger instance costs time proportional to its candidate rules (those of
its trigger type, or of its webhook for core.st2.webhook), not to all rules loaded.
Backstop rules are candidates too but match only when no standard rule matched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from engine.errors import RuleError, RuleLoadError
from engine.model.records import WEBHOOK_TRIGGER
from engine.rules.rule import BACKSTOP, Evaluation, Rule, normalize_webhook_name
from engine.rules.timers import trigger_key


@dataclass(frozen=True)
class RuleEvaluation:
    rule: Rule
    evaluation: Evaluation

    @property
    def matched(self) -> bool:
        return self.evaluation.matched


class RuleSet:
    """An immutable, indexed set of rules; build a new one to change it (reload)."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self._rules: dict[str, Rule] = {}
        for rule in rules:
            if rule.ref in self._rules:
                raise RuleError(f"rule {rule.ref!r} is defined twice")
            self._rules[rule.ref] = rule
        self._by_trigger: dict[str, list[Rule]] = {}
        self._by_webhook: dict[str, list[Rule]] = {}
        for rule in self._rules.values():
            if not rule.enabled:
                continue
            if rule.trigger_type == WEBHOOK_TRIGGER:
                self._by_webhook.setdefault(rule.webhook_url or "", []).append(rule)
            else:
                # Timer rules are keyed by their trigger ref (type and parameters), so a
                # tick reaches only the rules of its own schedule.
                key = trigger_key(rule.trigger_type, rule.trigger_parameters)
                self._by_trigger.setdefault(key, []).append(rule)

    @classmethod
    def build(cls, rules: Iterable[Rule]) -> tuple[RuleSet, list[RuleLoadError]]:
        """Like the constructor, but a duplicate ref is reported, not fatal: first wins."""
        kept: dict[str, Rule] = {}
        errors: list[RuleLoadError] = []
        for rule in rules:
            first = kept.get(rule.ref)
            if first is not None:
                errors.append(
                    RuleLoadError(
                        f"rule {rule.ref!r} is already defined at "
                        f"{first.source or '<rule>'}:{first.line or 1}; rule refs must be unique",
                        file=rule.source,
                        line=rule.line,
                        field="name",
                    )
                )
                continue
            kept[rule.ref] = rule
        return cls(kept.values()), errors

    def __len__(self) -> int:
        return len(self._rules)

    def __iter__(self):
        return iter(self._rules.values())

    def __contains__(self, ref: object) -> bool:
        return ref in self._rules

    def get(self, ref: str) -> Rule | None:
        return self._rules.get(ref)

    @property
    def webhooks(self) -> dict[str, list[Rule]]:
        """Named hooks declared by enabled rules: name → rules."""
        return dict(self._by_webhook)

    @property
    def trigger_types(self) -> set[str]:
        types = set(self._by_trigger)
        if self._by_webhook:
            types.add(WEBHOOK_TRIGGER)
        return types

    def candidates(self, trigger_type: str, webhook: str | None = None) -> list[Rule]:
        if trigger_type == WEBHOOK_TRIGGER:
            if webhook is None:
                return []
            return self._by_webhook.get(normalize_webhook_name(webhook), [])
        return self._by_trigger.get(trigger_type, [])

    def evaluate(
        self,
        trigger_type: str,
        payload: Any,
        webhook: str | None = None,
        *,
        kv: Any = None,
        stop_on_failure: bool = True,
        on_rule: Callable[[Rule], None] | None = None,
    ) -> list[RuleEvaluation]:
        """Evaluate every candidate; backstops match only if no standard rule matched.

        `on_rule(rule)` is called before each rule's criteria are evaluated (the evaluator
        process records which rule it is in, for its watchdog)."""
        standard: list[RuleEvaluation] = []
        backstop: list[Rule] = []
        any_standard_matched = False
        for rule in self.candidates(trigger_type, webhook):
            if rule.rule_type == BACKSTOP:
                backstop.append(rule)
                continue
            if on_rule is not None:
                on_rule(rule)
            evaluation = rule.evaluate(payload, kv=kv, stop_on_failure=stop_on_failure)
            any_standard_matched = any_standard_matched or evaluation.matched
            standard.append(RuleEvaluation(rule, evaluation))
        for rule in backstop:
            if any_standard_matched:
                evaluation = Evaluation(False, [], "a standard rule matched this trigger instance")
            else:
                if on_rule is not None:
                    on_rule(rule)
                evaluation = rule.evaluate(payload, kv=kv, stop_on_failure=stop_on_failure)
            standard.append(RuleEvaluation(rule, evaluation))
        return standard

    def match(
        self, trigger_type: str, payload: Any, webhook: str | None = None, *, kv: Any = None
    ) -> list[Rule]:
        """The rules that fire for this trigger instance."""
        return [
            result.rule
            for result in self.evaluate(trigger_type, payload, webhook, kv=kv)
            if result.matched
        ]
