"""Rules created through the API (`/api/v1/rules`): the stored record and its definition.

A stored rule keeps the rule as StackStorm's API shapes it (what `st2 rule get -j` prints
and `st2 rule create` sends). Read-only fields of that shape are dropped before storing, so
a rule fetched, edited and sent back stores the same definition. Stored rules load with
`source: "api"`; rules from files keep their file path as `source`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.errors import RuleLoadError
from engine.model.stored_rules import StoredRule
from engine.rules import Rule, RuleSet, load_rule
from engine.rules.loader import DEFAULT_PACK
from engine.rules.rule import is_rule_id, rule_id
from engine.rules.trigger_parameters import parameter_problems
from engine.rules.yamlsource import format_path

API_SOURCE = "api"

# Fields the API returns but a definition does not hold: identity is pack.name, and
# `source` says where the rule came from.
_READ_ONLY = ("id", "ref", "uid", "source")
# Optional fields our API prints as null when unset; a null there means "not set".
_NULL_MEANS_UNSET = ("once_per", "metadata_file", "description", "context", "tags", "criteria")


def normalize_definition(body: Mapping[str, Any]) -> dict[str, Any]:
    """The definition to store for an API body: read-only fields dropped, pack filled in."""
    definition = {
        key: value
        for key, value in body.items()
        if key not in _READ_ONLY and not (key in _NULL_MEANS_UNSET and value is None)
    }
    if isinstance(definition.get("trigger"), Mapping):
        # `trigger.ref` is printed beside `trigger.type` and always equal to it.
        definition["trigger"] = {k: v for k, v in definition["trigger"].items() if k != "ref"}
    if not definition.get("pack"):
        definition["pack"] = DEFAULT_PACK
    return definition


def build_api_rule(
    definition: Mapping[str, Any], trigger_schemas: Mapping[str, Mapping[str, Any]] | None = None
) -> Rule:
    """Load a definition the way a rule file loads, its trigger parameters checked against
    `trigger_schemas` (the loaded packs' trigger types) too. Raises RuleLoadError naming the
    field path."""
    rule = load_rule(definition, origin=API_SOURCE)
    schema = (trigger_schemas or {}).get(rule.trigger_type)
    problems = parameter_problems(rule.trigger_type, rule.trigger_parameters, schema)
    if problems:
        path, message = problems[0]
        field = format_path(("trigger", "parameters", *path))
        raise RuleLoadError(f"{rule.trigger_type}: {message}", file=API_SOURCE, field=field)
    return rule


def is_api_rule(rule: Rule) -> bool:
    return rule.source == API_SOURCE


def loaded_rule(ruleset: RuleSet, ref_or_id: str) -> Rule | None:
    """The loaded rule with this ref or id (`GET /api/v1/rules/{ref_or_id}`, as StackStorm)."""
    rule = ruleset.get(ref_or_id)
    if rule is None and is_rule_id(ref_or_id):
        rule = next((r for r in ruleset if r.id == ref_or_id), None)
    return rule


def stored_ref(records: list[StoredRule], ref_or_id: str) -> str | None:
    """The ref of the stored rule with this ref or id, loaded or not: a rule stored with a
    ref too long for a URL (or that no longer loads) is still reached by its id."""
    for record in records:
        if record.ref == ref_or_id or (is_rule_id(ref_or_id) and rule_id(record.ref) == ref_or_id):
            return record.ref
    return None


def shown_ref(ref: str, limit: int = 100) -> str:
    """A ref cut for a log line or an error message."""
    return ref if len(ref) <= limit else f"{ref[:limit]}... ({len(ref):,} characters)"
