"""A pack's configuration: ``config.schema.yaml`` in the pack, values in ``<configs>/<ref>.yaml``.

As in StackStorm, the schema maps each config item to a parameter-style definition; values
get the schema's defaults and are validated against it. Keys the schema does not name are
kept (StackStorm allows them), and a value that is a template (``{{ st2kv.system.x }}``) is
rendered for each execution (`render_config`), and checked against the schema then.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from engine.errors import ActionError, PackError, TemplateError
from engine.packs.metadata import pack_error, type_name
from engine.packs.parameters import ActionParameter, check_definitions
from engine.rules import templates
from engine.rules.kvlookup import revealing
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
        problem = _schema_problem(name, spec, value)
        if problem is not None:
            message, path = problem
            if located is None:
                raise PackError(message)
            raise pack_error(located, message, path)
    return values


def render_config(
    values: Mapping[str, Any], schema: Mapping[str, ActionParameter], kv: Any, pack_ref: str
) -> dict[str, Any]:
    """The config as an action sees it, its ``{{ st2kv... }}`` values rendered.

    As in StackStorm, templates are rendered when an action runs — a changed datastore key
    applies to the next execution without a reload — with only ``st2kv`` (and filters such
    as ``decrypt_kv``) in scope. Then, for an item the schema describes:
    - ``secret: true``: a secret key's value is decrypted, with or without ``decrypt_kv``
      (StackStorm decrypts secret config items itself);
    - a type other than string: a rendered string is read as JSON (datastore values are
      strings: "3" for an integer item, "true" for a boolean, a JSON text for an object);
    and the result is checked against the schema. A value that is not a template is
    returned as loaded. Raises ActionError naming the pack and the item (never the value:
    config items are often secrets).
    """
    context = {"st2kv": kv}
    secret_context = {"st2kv": revealing(kv)}
    rendered: dict[str, Any] = {}
    for name, value in values.items():
        if not _holds_template(value):
            rendered[name] = value
            continue
        spec = schema.get(name)
        try:
            value = templates.render_value(
                value, secret_context if spec is not None and spec.secret else context
            )
        except TemplateError as exc:
            raise ActionError(f"pack {pack_ref!r} config item {name!r}: {exc}") from None
        if value == "":
            # As in StackStorm: a template that renders nothing (a missing datastore key)
            # leaves the item unset.
            value = None
        if spec is not None and value is None:
            if spec.required:
                raise ActionError(
                    f"pack {pack_ref!r} config item {name!r} is required but its template "
                    "rendered nothing: is the datastore key it reads set?"
                )
        elif spec is not None:
            value = _as_schema_wants(spec, value)
            problem = _schema_problem(name, spec, value)
            if problem is not None:
                raise ActionError(f"pack {pack_ref!r}: rendered {problem[0]}")
        rendered[name] = value
    return rendered


def _as_schema_wants(spec: ActionParameter, value: Any) -> Any:
    if isinstance(value, str) and spec.type not in (None, "string"):
        try:
            return json.loads(value)
        except ValueError:
            return value  # the schema check names the item and the type it wants
    return value


def _holds_template(value: Any) -> bool:
    if isinstance(value, str):
        return templates.is_template(value)
    if isinstance(value, dict):
        return any(_holds_template(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_template(item) for item in value)
    return False


def _schema_problem(
    name: str, spec: ActionParameter, value: Any
) -> tuple[str, tuple[Any, ...]] | None:
    """(message, path) for the first way `value` breaks the item's schema, else None."""
    errors = sorted(spec.validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    error = errors[0]
    path = (name, *error.absolute_path)
    where = f"config item {'.'.join(map(str, path))!r}"
    if spec.secret:
        message = f"{where}: invalid value"
        if error.validator == "type":
            message = f"{where}: expected {error.validator_value}, got {type_name(error.instance)}"
    elif error.validator == "type":
        message = f"{where}: expected {error.validator_value}, got {error.instance!r}"
    else:
        message = f"{where}: {error.message}"
    return message, path
