"""Warnings about rules that load but will probably never do what their author meant.

Pure: callers pass what is known (actions, packs). `hookyard rule validate` prints these
as warnings; they never fail a load, because a missing pack may simply not be installed
on the machine running the check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from engine.errors import TemplateError
from engine.model.generic_triggers import GENERIC_TRIGGERS
from engine.model.records import WEBHOOK_TRIGGER
from engine.rules import templates
from engine.rules.criteria import Criterion
from engine.rules.fields import strip_suffix
from engine.rules.rule import Rule
from engine.rules.timers import TIMER_TRIGGER_TYPES, is_timer
from engine.rules.yamlsource import suggestion

# The system trigger types known without reading the core pack (which ships a few more).
BUILTIN_TRIGGER_TYPES = (WEBHOOK_TRIGGER, *TIMER_TRIGGER_TYPES, *sorted(GENERIC_TRIGGERS))
# Shell-command parameters known without reading any pack (core's local-shell-cmd action).
BUILTIN_SHELL_PARAMETERS = {"core.local": frozenset({"cmd"})}


@dataclass(frozen=True)
class RuleWarning:
    rule: Rule
    message: str
    # The line the warning is about (an action parameter's); else the rule's.
    line: int | None = None

    def __str__(self) -> str:
        line = self.line or self.rule.line or 1
        where = f"{self.rule.source}:{line}: " if self.rule.source else ""
        return f"{where}warning: rule {self.rule.ref}: {self.message}"


def lint_rules(
    rules: Iterable[Rule],
    *,
    known_actions: set[str] | None = None,
    known_packs: set[str] | None = None,
    shell_parameters: Callable[[str], frozenset[str]] | None = None,
    known_trigger_types: set[str] | None = None,
) -> list[RuleWarning]:
    """Warnings for every rule; `known_actions`/`known_packs` None skips those checks.

    `known_trigger_types` (those the loaded packs declare, the core pack's included) says
    which `core.*` trigger types exist; None knows BUILTIN_TRIGGER_TYPES.

    `shell_parameters(ref)` names the shell-command parameters of an action (from its
    pack); None knows only BUILTIN_SHELL_PARAMETERS.
    """
    warnings: list[RuleWarning] = []
    for rule in rules:
        warnings.extend(
            RuleWarning(rule, m)
            for m in _rule_messages(rule, known_actions, known_packs, known_trigger_types)
        )
        warnings.extend(shell_template_warnings(rule, shell_parameters))
    return warnings


def shell_template_warnings(
    rule: Rule, shell_parameters: Callable[[str], frozenset[str]] | None = None
) -> list[RuleWarning]:
    """A warning for each {{ }} of a shell command parameter that would refuse its value.

    Such a rule loads (so existing rules keep loading), but every execution that inserts
    a value there fails: the value belongs in the action's env parameter.
    """
    if shell_parameters is None:
        names = BUILTIN_SHELL_PARAMETERS.get(rule.action_ref, frozenset())
    else:
        names = shell_parameters(rule.action_ref)
    warnings = []
    for name in sorted(names):
        value = (rule.action_parameters or {}).get(name)
        if not isinstance(value, str):
            continue
        try:
            problems = templates.shell_template_problems(value)
        except TemplateError:
            continue  # the loader reports templates that do not compile
        line = rule.parameter_lines.get(name)
        warnings.extend(
            RuleWarning(rule, f"action parameter {name!r}: {problem}", line) for problem in problems
        )
    return warnings


def _rule_messages(
    rule: Rule,
    known_actions: set[str] | None,
    known_packs: set[str] | None,
    known_trigger_types: set[str] | None,
) -> list[str]:
    messages = []
    if known_actions is not None and rule.action_ref not in known_actions:
        hint = suggestion(rule.action_ref, sorted(known_actions)) or " (is its pack in packs_dirs?)"
        messages.append(f"action {rule.action_ref!r} is not a known action{hint}")
    messages.extend(_trigger_messages(rule, known_packs, known_trigger_types))
    messages.extend(never_matching(rule.criteria))
    return messages


def _trigger_messages(
    rule: Rule, known_packs: set[str] | None, known_trigger_types: set[str] | None
) -> list[str]:
    trigger = rule.trigger_type
    if trigger == WEBHOOK_TRIGGER:
        if not rule.webhook_url:
            return ["a core.st2.webhook rule without trigger.parameters.url listens to no hook"]
        return []
    if is_timer(trigger):
        return []  # a timer that would never fire does not load (trigger_parameters)
    builtin = sorted({*BUILTIN_TRIGGER_TYPES, *(known_trigger_types or ())})
    if trigger in builtin:
        return []
    if trigger.startswith("core."):
        hint = suggestion(trigger, [t for t in builtin if t.startswith("core.")])
        return [f"trigger type {trigger!r} is not a built-in trigger{hint}"]
    pack = trigger.partition(".")[0]
    if known_packs is not None and pack not in known_packs:
        return [
            f"trigger type {trigger!r} is neither built in nor from a loaded pack; it fires "
            f"only when something posts it to /webhooks/st2"
        ]
    return []


def never_matching(criteria: Iterable[Criterion]) -> list[str]:
    """Pairs of criteria on one field (``#`` tags stripped) that cannot both hold."""
    by_field: dict[str, list[Criterion]] = {}
    for criterion in criteria:
        by_field.setdefault(strip_suffix(criterion.key), []).append(criterion)
    messages = []
    for field, group in by_field.items():
        problem = _contradiction(group)
        if problem:
            messages.append(f"criteria on {field} can never all match: {problem}")
    return messages


def _literal(criterion: Criterion) -> tuple[bool, object]:
    """(True, pattern) when the pattern is fixed (not a template rendered per event)."""
    return criterion.pattern_template is None, criterion.pattern


def _contradiction(group: list[Criterion]) -> str | None:
    names = {c.operator.name for c in group}
    if {"exists", "nexists"} <= names:
        return "exists and nexists"
    fixed = [(c.operator.name, c.pattern) for c in group if _literal(c)[0]]
    equals = {repr(p) for name, p in fixed if name == "equals"}
    if len(equals) > 1:
        return f"equals {' and '.join(sorted(equals))}"
    iequals = {str(p).lower() for name, p in fixed if name == "iequals"}
    if len(iequals) > 1:
        return f"iequals {' and '.join(repr(v) for v in sorted(iequals))}"
    for name, pattern in fixed:
        if name == "nequals" and repr(pattern) in equals:
            return f"equals and nequals {pattern!r}"
    if "nexists" in names and names - {"nexists", "nequals", "ncontains", "ninside"}:
        other = sorted(names - {"nexists", "nequals", "ncontains", "ninside"})[0]
        if other in ("equals", "iequals", "contains", "startswith", "endswith", "exists"):
            return f"nexists and {other}"
    return None
