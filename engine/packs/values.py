"""One run's parameter values: defaults applied, checked against the action's definitions,
and split into what the runner takes and what the action itself gets."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import jsonschema

from engine.errors import ActionError
from engine.packs.metadata import suggestion, type_name
from engine.packs.parameters import ActionParameter
from engine.rules import regexes

_SHOWN_MAX = 80

Renderer = Callable[[dict[str, Any]], dict[str, Any]]


def prepare_values(
    action_ref: str,
    specs: Mapping[str, ActionParameter],
    given: Mapping[str, Any],
    render: Renderer | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Defaults applied, values validated; returns (runner parameters, action parameters).

    ``render`` (the worker's template renderer) runs after defaults are applied and before
    validation, so a templated default such as ``echo {{ message }}`` is checked rendered.
    """
    for name, value in given.items():
        spec = specs.get(name)
        if spec is None:
            known = ", ".join(sorted(specs)) or "none"
            raise ActionError(
                f"action {action_ref!r} has no parameter {name!r}"
                f"{suggestion(str(name), specs)}; its parameters are: {known}"
            )
        if spec.immutable and value is not None and (not spec.has_default or value != spec.default):
            raise ActionError(
                f"parameter {name!r}: immutable in action {action_ref!r}, it cannot be set"
            )
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        value = given.get(name)
        if value is None and spec.has_default:
            value = copy.deepcopy(spec.default)
        elif value is None and name not in given:
            continue
        values[name] = _with_nested_defaults(value, spec.schema)
    if render is not None:
        values = render(values)
    with regexes.budget():  # the schemas' patterns share one time budget
        for name, spec in specs.items():
            value = values.get(name)
            if value is None:
                # StackStorm accepts null for an optional parameter whatever its type.
                if spec.required:
                    raise ActionError(
                        f"parameter {name!r}: required by action {action_ref!r} but not given"
                    )
                continue
            errors = sorted(spec.validator.iter_errors(value), key=lambda e: list(e.absolute_path))
            if errors:
                raise ActionError(_describe(spec, errors[0]))
    runner_values = {n: v for n, v in values.items() if specs[n].runner_parameter}
    action_values = {n: v for n, v in values.items() if not specs[n].runner_parameter}
    return runner_values, action_values


def _with_nested_defaults(value: Any, schema: Mapping[str, Any]) -> Any:
    # Object properties get their defaults too, as StackStorm's assign_default_values does.
    properties = schema.get("properties")
    if not isinstance(value, dict) or not isinstance(properties, Mapping):
        return value
    filled = dict(value)
    for name, child in properties.items():
        if not isinstance(child, Mapping):
            continue
        if filled.get(name) is None and "default" in child:
            filled[name] = copy.deepcopy(child["default"])
        if name in filled:
            filled[name] = _with_nested_defaults(filled[name], child)
    return filled


def _describe(spec: ActionParameter, error: jsonschema.ValidationError) -> str:
    where = ".".join([spec.name, *map(str, error.absolute_path)])
    got = _shown(error.instance, spec.secret)
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"parameter {where!r}: expected {expected}, got {got}"
    if error.validator == "enum":
        choices = ", ".join(map(str, error.validator_value))
        return f"parameter {where!r}: expected one of {choices}, got {got}"
    if spec.secret:
        return f"parameter {where!r}: invalid value ({error.validator} check failed)"
    return f"parameter {where!r}: {error.message}"


def _shown(value: Any, secret: bool) -> str:
    if secret:
        return type_name(value)
    text = repr(value)
    return text if len(text) <= _SHOWN_MAX else text[: _SHOWN_MAX - 3] + "..."
