"""Action parameter definitions as pack authors write them, checked and merged with the
runner's (values of one run are checked in engine.packs.values).

A definition is a JSON-schema property plus StackStorm's extensions: ``required`` (a
boolean on the property itself, draft-3 style), ``default``, ``secret``, ``immutable`` and
``position``. Values are validated with JSON Schema draft 4, the draft StackStorm uses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import jsonschema

from engine.errors import RuleError, TemplateError
from engine.packs.metadata import pack_error, suggestion, type_name
from engine.rules import regexes, templates
from engine.rules.yamlsource import Located
from engine.rules.yamlsource import Path as FieldPath


class _Missing:
    def __repr__(self) -> str:
        return "<no default>"

    def __bool__(self) -> bool:
        return False


# The default of a parameter that declares none (None is a real default in StackStorm).
MISSING: Any = _Missing()

EXTENSION_KEYS = ("required", "default", "secret", "immutable", "position")
# The JSON Schema (draft 4) keywords StackStorm accepts in a parameter definition.
SCHEMA_KEYS = (
    "id", "$schema", "$ref", "title", "description", "type", "enum", "format",
    "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "maxLength", "minLength", "pattern",
    "items", "additionalItems", "maxItems", "minItems", "uniqueItems",
    "properties", "patternProperties", "additionalProperties", "dependencies",
    "maxProperties", "minProperties", "definitions",
    "allOf", "anyOf", "oneOf", "not",
)  # fmt: skip
PARAMETER_KEYS = (*EXTENSION_KEYS, *SCHEMA_KEYS)
# raw_string is StackStorm's "a string never rendered as a template"; it validates as string.
SIMPLE_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string", "raw_string")
# What an action may change about a parameter its runner declares (StackStorm's rule).
RUNNER_OVERRIDABLE = ("default", "description", "enum", "immutable", "required")
PARAMETER_NAME = re.compile(r"^\w+$")

_SUBSCHEMA_MAPS = ("properties", "patternProperties", "definitions")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SUBSCHEMA_ONE = ("additionalProperties", "additionalItems", "not")


@dataclass(frozen=True)
class ActionParameter:
    name: str
    type: str | None
    required: bool
    default: Any  # MISSING when the definition has none
    secret: bool
    immutable: bool
    position: int | None
    description: str | None
    enum: tuple[Any, ...] | None
    # The merged definition as written (JSON-schema property plus the extensions).
    schema: Mapping[str, Any]
    # Declared by the runner (possibly overridden by the action): a runner parameter.
    runner_parameter: bool = False

    @classmethod
    def from_definition(
        cls, name: str, definition: Mapping[str, Any], *, runner_parameter: bool = False
    ) -> ActionParameter:
        enum = definition.get("enum")
        return cls(
            name=name,
            type=definition.get("type"),
            required=definition.get("required") is True,
            default=definition.get("default", MISSING),
            secret=_has_secret(definition),
            immutable=definition.get("immutable") is True,
            position=definition.get("position"),
            description=definition.get("description"),
            enum=tuple(enum) if isinstance(enum, list) else None,
            schema=definition,
            runner_parameter=runner_parameter,
        )

    @property
    def has_default(self) -> bool:
        return self.default is not MISSING

    @cached_property
    def json_schema(self) -> dict[str, Any]:
        """The definition as plain JSON Schema draft 4 (extensions dropped or translated)."""
        return to_json_schema(self.schema)

    @cached_property
    def validator(self) -> jsonschema.Draft4Validator:
        return _BoundedValidator(self.json_schema)


def _bounded_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    # The value may come from a webhook sender: matched under a time limit (ReDoS).
    if not validator.is_type(instance, "string"):
        return
    try:
        found = regexes.search(pattern, instance)
    except RuleError as error:  # an invalid pattern, or one stopped
        yield jsonschema.ValidationError(f"pattern {pattern!r} could not be applied: {error}")
        return
    if found is None:
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _bounded_pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Any
) -> Any:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            try:
                found = regexes.search(pattern, key)
            except RuleError as error:
                yield jsonschema.ValidationError(
                    f"pattern {pattern!r} could not be applied: {error}"
                )
                return
            if found is not None:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


# Draft 4, with `pattern` and `patternProperties` matched through engine.rules.regexes.
_BoundedValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,
    {"pattern": _bounded_pattern, "patternProperties": _bounded_pattern_properties},
)


def validator_for(json_schema: Mapping[str, Any]) -> Any:
    """A draft 4 validator of `json_schema` (already translated by `to_json_schema`) whose
    patterns run under a time limit."""
    return _BoundedValidator(json_schema)


def _has_secret(definition: Mapping[str, Any]) -> bool:
    # A nested secret (signing.secret, a secret list item, a secret value of a map) makes
    # the whole value secret: masking works on values, and error texts show no value.
    if definition.get("secret") is True:
        return True
    nested: list[Any] = []
    for key in ("properties", "patternProperties"):
        children = definition.get(key)
        if isinstance(children, Mapping):
            nested.extend(children.values())
    for key in ("items", "additionalProperties"):
        child = definition.get(key)
        nested.extend(child if isinstance(child, list) else [child])
    return any(isinstance(child, Mapping) and _has_secret(child) for child in nested)


# --- definitions (load time) --------------------------------------------------


def check_definitions(located: Located, definitions: Any, path: FieldPath) -> dict[str, dict]:
    """The parameter definitions at ``path``, checked; PackError at the first bad one."""
    if definitions is None:
        return {}
    if not isinstance(definitions, dict):
        raise pack_error(
            located,
            f"parameters must map parameter names to definitions, got {type_name(definitions)}",
            path,
        )
    for name, definition in definitions.items():
        where = (*path, name)
        if not isinstance(name, str) or not PARAMETER_NAME.match(name):
            raise pack_error(
                located,
                f"invalid parameter name {name!r}: use letters, digits and underscores",
                where,
                at_key=True,
            )
        _check_definition(located, definition, where, top=True)
        try:
            jsonschema.Draft4Validator.check_schema(to_json_schema(definition))
        except jsonschema.SchemaError as exc:
            raise pack_error(
                located, f"invalid schema for parameter {name!r}: {exc.message}", where
            ) from None
        default = definition.get("default")
        if isinstance(default, str) and templates.is_template(default):
            try:
                templates.compile_template(default)
            except TemplateError as exc:
                raise pack_error(located, f"invalid template: {exc}", (*where, "default")) from None
    return definitions


def _check_definition(located: Located, definition: Any, where: FieldPath, *, top: bool) -> None:
    if not isinstance(definition, dict):
        raise pack_error(
            located,
            "a parameter definition must be a mapping (type, description, default...), "
            f"got {type_name(definition)}",
            where,
        )
    for key in definition:
        if key not in PARAMETER_KEYS:
            raise pack_error(
                located,
                f"unknown parameter attribute {key!r}{suggestion(str(key), PARAMETER_KEYS)}",
                (*where, key),
                at_key=True,
            )
    kind = definition.get("type")
    if kind is not None and kind not in SIMPLE_TYPES:
        hint = suggestion(str(kind), SIMPLE_TYPES) if isinstance(kind, str) else ""
        if isinstance(kind, list):
            hint = "; a parameter has one type (use anyOf for alternatives)"
        raise pack_error(
            located,
            f"unknown type {kind!r}{hint}; types are {', '.join(SIMPLE_TYPES)}",
            (*where, "type"),
        )
    required = definition.get("required")
    # Nested object schemas may also use draft 4's list form: required: [a, b].
    required_list = isinstance(required, list) and all(isinstance(r, str) for r in required)
    if required is not None and not isinstance(required, bool) and (top or not required_list):
        raise pack_error(
            located,
            f"'required' must be true or false, got {type_name(required)}",
            (*where, "required"),
        )
    for flag in ("secret", "immutable"):
        if flag in definition and not isinstance(definition[flag], bool):
            raise pack_error(
                located,
                f"{flag!r} must be true or false, got {type_name(definition[flag])}",
                (*where, flag),
            )
    if "position" in definition:
        position = definition["position"]
        if not top or not isinstance(position, int) or isinstance(position, bool) or position < 0:
            raise pack_error(
                located,
                "'position' must be a whole number from 0, on a top-level parameter",
                (*where, "position"),
            )
    if "enum" in definition and not (isinstance(definition["enum"], list) and definition["enum"]):
        raise pack_error(located, "'enum' must be a non-empty list", (*where, "enum"))
    for key in _SUBSCHEMA_MAPS:
        children = definition.get(key)
        if isinstance(children, dict):
            for child_name, child in children.items():
                _check_definition(located, child, (*where, key, child_name), top=False)
    for key in _SUBSCHEMA_LISTS:
        children = definition.get(key)
        if isinstance(children, list):
            for index, child in enumerate(children):
                _check_definition(located, child, (*where, key, index), top=False)
    for key in (*_SUBSCHEMA_ONE, "items"):
        child = definition.get(key)
        if isinstance(child, dict):
            _check_definition(located, child, (*where, key), top=False)
        elif key == "items" and isinstance(child, list):
            for index, item in enumerate(child):
                _check_definition(located, item, (*where, key, index), top=False)


def to_json_schema(definition: Mapping[str, Any]) -> dict[str, Any]:
    """A definition as JSON Schema draft 4: draft-3 ``required: true`` on properties become
    the parent's ``required`` list; secret/immutable/position are not validation keywords."""
    schema: dict[str, Any] = {}
    required_children: list[str] = []
    for key, value in definition.items():
        if key in ("secret", "immutable", "position"):
            continue
        if key == "required":
            if isinstance(value, list):
                schema["required"] = list(value)
            continue
        if key == "type" and value == "raw_string":
            schema["type"] = "string"
        elif key in _SUBSCHEMA_MAPS and isinstance(value, Mapping):
            schema[key] = {n: _sub(child) for n, child in value.items()}
            if key == "properties":
                required_children = [
                    n
                    for n, child in value.items()
                    if isinstance(child, Mapping) and child.get("required") is True
                ]
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            schema[key] = [_sub(child) for child in value]
        elif key in (*_SUBSCHEMA_ONE, "items"):
            schema[key] = [_sub(c) for c in value] if isinstance(value, list) else _sub(value)
        else:
            schema[key] = value
    if required_children:
        schema["required"] = list(dict.fromkeys([*schema.get("required", []), *required_children]))
    return schema


def _sub(value: Any) -> Any:
    return to_json_schema(value) if isinstance(value, Mapping) else value


def merge_with_runner(
    located: Located,
    runner_name: str,
    runner_parameters: Mapping[str, Mapping[str, Any]],
    action_parameters: Mapping[str, Mapping[str, Any]],
    path: FieldPath = ("parameters",),
) -> dict[str, ActionParameter]:
    """StackStorm's merge: runner parameters are inherited; an action may change only
    default/description/enum/immutable/required of one (restating the same value is fine)."""
    merged: dict[str, ActionParameter] = {}
    for name, base in runner_parameters.items():
        definition = dict(base)
        override = action_parameters.get(name)
        for attribute, value in (override or {}).items():
            if attribute not in RUNNER_OVERRIDABLE and base.get(attribute, MISSING) != value:
                raise pack_error(
                    located,
                    f"parameter {name!r} belongs to runner {runner_name!r}: an action may "
                    f"override only its {', '.join(RUNNER_OVERRIDABLE)}, not {attribute!r}",
                    (*path, name, attribute),
                    at_key=True,
                )
            definition[attribute] = value
        merged[name] = ActionParameter.from_definition(name, definition, runner_parameter=True)
    for name, definition in action_parameters.items():
        if name not in runner_parameters:
            merged[name] = ActionParameter.from_definition(name, definition)
    _check_merged(located, merged, path)
    return merged


def _check_merged(located: Located, merged: dict[str, ActionParameter], path: FieldPath) -> None:
    taken: dict[int, str] = {}
    for name, parameter in merged.items():
        if parameter.immutable and parameter.required and not parameter.has_default:
            raise pack_error(
                located,
                f"parameter {name!r} is immutable and required but has no default, "
                "so no run could ever set it",
                (*path, name),
            )
        if parameter.position is not None:
            other = taken.get(parameter.position)
            if other is not None:
                raise pack_error(
                    located,
                    f"parameters {other!r} and {name!r} both have position {parameter.position}",
                    (*path, name, "position"),
                )
            taken[parameter.position] = name


__all__ = [
    "MISSING",
    "RUNNER_OVERRIDABLE",
    "ActionParameter",
    "check_definitions",
    "merge_with_runner",
    "to_json_schema",
]
