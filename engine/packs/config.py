"""A pack's configuration: ``config.schema.yaml`` in the pack, values in ``<configs>/<ref>.yaml``.

As in StackStorm, the schema maps each config item to a parameter-style definition; values
get the schema's defaults and are validated against it. Keys the schema does not name are
kept (StackStorm allows them), and a value that is a template (``{{ st2kv.system.x }}``) is
rendered later, so it is not type-checked here.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from engine.errors import PackError
from engine.packs.metadata import pack_error, type_name
from engine.packs.parameters import ActionParameter, check_definitions
from engine.rules import templates
from engine.rules.yamlsource import Located


def read_config_schema(located: Located) -> dict[str, ActionParameter]:
    definitions = check_definitions(located, located.data, ())
    return {n: ActionParameter.from_definition(n, d) for n, d in definitions.items()}


def resolve_config(
    located: Located | None, schema: Mapping[str, ActionParameter], pack_ref: str
) -> dict[str, Any]:
    """The config values (``located`` is the config file, None if there is none)."""
    raw = located.data if located is not None else None
    if raw is None:
        values: dict[str, Any] = {}
    elif isinstance(raw, dict):
        values = dict(raw)
    else:
        raise pack_error(located, f"a pack config must be a mapping, got {type_name(raw)}")
    for name, spec in schema.items():
        if values.get(name) is None and spec.has_default:
            values[name] = copy.deepcopy(spec.default)
        value = values.get(name)
        if value is None:
            if spec.required:
                message = f"config item {name!r} is required by pack {pack_ref!r}'s config schema"
                if located is None:
                    raise PackError(message + " but the pack has no config file")
                raise pack_error(located, message)
            continue
        if isinstance(value, str) and templates.is_template(value):
            continue
        errors = sorted(spec.validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            error = errors[0]
            path = (name, *error.absolute_path)
            shown = type_name(error.instance) if spec.secret else repr(error.instance)
            message = f"config item {'.'.join(map(str, path))!r}: {error.message}"
            if spec.secret:
                message = f"config item {'.'.join(map(str, path))!r}: invalid value"
            if error.validator == "type":
                message = (
                    f"config item {'.'.join(map(str, path))!r}: "
                    f"expected {error.validator_value}, got {shown}"
                )
            if located is None:
                raise PackError(message)
            raise pack_error(located, message, path)
    return values
