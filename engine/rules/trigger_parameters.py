"""A rule's trigger parameters checked against its trigger type's parameters schema.

StackStorm refuses a rule whose trigger parameters do not fit the trigger type's
`parameters_schema` (st2common validators/api/reactor.py, for system types always and for
pack types while `system.validate_trigger_parameters` is on, its default), and for a
CronTimer also fields APScheduler refuses. Such a rule would never fire, so it is an error
naming the field, not a warning.

System trigger types are checked with the schemas below wherever a rule loads; trigger
types from packs are checked by whoever has the packs loaded (`unfit_trigger_parameters`).
Pure: no I/O.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema

from engine.errors import RuleLoadError
from engine.model.records import WEBHOOK_TRIGGER
from engine.rules.rule import Rule
from engine.rules.timers import CRON_TIMER, DATE_TIMER, INTERVAL_TIMER, TimerError, schedule_for
from engine.rules.yamlsource import format_path

_CRON_FIELD = {"anyOf": [{"type": "string"}, {"type": "integer"}]}


def _cron_field(low: int | None = None, high: int | None = None) -> dict[str, Any]:
    bounds = {} if low is None else {"minimum": low, "maximum": high}
    return {**_CRON_FIELD, **bounds}


# Facts from StackStorm's st2common/constants/triggers.py; the built-in core pack's
# triggers/ files declare the same schemas (a unit test keeps the two equal).
SYSTEM_PARAMETER_SCHEMAS: dict[str, dict[str, Any]] = {
    WEBHOOK_TRIGGER: {
        "type": "object",
        "properties": {"url": {"type": "string"}},
        "required": ["url"],
        "additionalProperties": False,
    },
    INTERVAL_TIMER: {
        "type": "object",
        "properties": {
            "timezone": {"type": "string"},
            "unit": {"enum": ["weeks", "days", "hours", "minutes", "seconds"]},
            "delta": {"type": "integer"},
        },
        "required": ["unit", "delta"],
        "additionalProperties": False,
    },
    DATE_TIMER: {
        "type": "object",
        "properties": {
            "timezone": {"type": "string"},
            "date": {"type": "string", "format": "date-time"},
        },
        "required": ["date"],
        "additionalProperties": False,
    },
    CRON_TIMER: {
        "type": "object",
        "properties": {
            "timezone": {"type": "string"},
            "year": _cron_field(),
            "month": _cron_field(1, 12),
            "day": _cron_field(1, 31),
            "week": _cron_field(1, 53),
            "day_of_week": _cron_field(0, 6),
            "hour": _cron_field(0, 23),
            "minute": _cron_field(0, 59),
            "second": _cron_field(0, 59),
        },
        "additionalProperties": False,
    },
}

Problem = tuple[tuple[Any, ...], str]  # (path inside trigger.parameters, message)


def parameter_problems(
    trigger_type: str, parameters: Any, schema: Mapping[str, Any] | None
) -> list[Problem]:
    """Every way `parameters` break `schema` (and, for a timer, its schedule), sorted by
    field; empty when they fit or there is no schema."""
    if not schema:
        return []
    instance = _plain(parameters if parameters is not None else {})
    validator = jsonschema.Draft4Validator(draft4_schema(schema))
    problems = [
        _problem(error)
        for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.path)))
    ]
    if not problems and trigger_type in (INTERVAL_TIMER, DATE_TIMER, CRON_TIMER):
        try:
            schedule_for(trigger_type, parameters)
        except TimerError as exc:
            problems.append(((), str(exc)))
    return problems


def unfit_trigger_parameters(
    rules: Iterable[Rule], schemas: Mapping[str, Mapping[str, Any]]
) -> tuple[list[Rule], list[RuleLoadError]]:
    """(the rules whose trigger parameters fit, an error for each that does not).

    `schemas` maps trigger type refs (those of the loaded packs) to parameters schemas;
    system types were checked when the rule loaded.
    """
    kept: list[Rule] = []
    errors: list[RuleLoadError] = []
    for rule in rules:
        schema = (
            None
            if rule.trigger_type in SYSTEM_PARAMETER_SCHEMAS
            else schemas.get(rule.trigger_type)
        )
        problems = parameter_problems(rule.trigger_type, rule.trigger_parameters, schema)
        if not problems:
            kept.append(rule)
            continue
        for path, message in problems:
            where = ("trigger", "parameters", *path)
            line = rule.trigger_parameter_lines.get(path[0]) if path else None
            errors.append(
                RuleLoadError(
                    f"rule {rule.ref}: {rule.trigger_type} {format_path(where)}: {message}",
                    file=rule.source,
                    line=line or rule.line,
                    field=format_path(where),
                )
            )
    return kept, errors


def draft4_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """`schema` with StackStorm's draft-3 habit `required: true` on a property turned into
    draft 4's `required: [names]` on its object (pack trigger types are written both ways)."""
    result = copy.deepcopy(dict(schema))
    _lift_required(result)
    return result


def _lift_required(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _lift_required(item)
        return
    if not isinstance(node, dict):
        return
    properties = node.get("properties")
    if isinstance(properties, dict):
        required = node.get("required") if isinstance(node.get("required"), list) else []
        for name, spec in properties.items():
            flag = spec.get("required") if isinstance(spec, dict) else None
            if isinstance(flag, bool):
                del spec["required"]
                if flag and name not in required:
                    required.append(name)
        if required:
            node["required"] = required
        elif isinstance(node.get("required"), bool):
            node.pop("required")
    for value in node.values():
        _lift_required(value)


def _plain(value: Any) -> Any:
    """YAML reads an unquoted `2030-01-31 08:00:00` as a datetime; the schema (and
    StackStorm's JSON) sees it as the string it was written as."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _problem(error: jsonschema.ValidationError) -> Problem:
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})), key=str)
        known = ", ".join(sorted(error.schema.get("properties", {}))) or "none"
        if extra:
            return (*path, extra[0]), f"unknown parameter {extra[0]!r}; known: {known}"
    if error.validator == "required" and "'" in error.message:
        return path, f"missing required parameter {error.message.split(chr(39))[1]!r}"
    text = error.message
    return path, text if len(text) <= 300 else text[:300] + "..."
