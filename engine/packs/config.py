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

from engine.errors import ActionError, PackError, RuleError, TemplateError
from engine.packs.metadata import pack_error, type_name
from engine.packs.parameters import ActionParameter, check_definitions
from engine.rules import regexes, templates
from engine.rules.kvlookup import revealing
from engine.rules.yamlsource import Located


def read_config_schema(located: Located) -> dict[str, ActionParameter]:
    definitions = check_definitions(located, located.data, ())
    return {n: ActionParameter.from_definition(n, d) for n, d in definitions.items()}


def resolve_config(
    located: Located | None, schema: Mapping[str, ActionParameter], pack_ref: str
) -> dict[str, Any]:
    """The config values (``located`` is the config file, None if there is none: then the
    schema's defaults, and no item is required, as StackStorm's config loader does)."""
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
            # As StackStorm: a pack without a config file runs with the schema's defaults;
            # what is required is checked only in a config file someone wrote.
            if spec.required and located is not None:
                message = f"config item {name!r} is required by pack {pack_ref!r}'s config schema"
                raise pack_error(located, message)
            continue
        if _holds_template(value):
            continue  # checked once rendered, when an action runs
        problem = _schema_problem(name, spec, value, show_value=not spec.secret)
        if problem is not None:
            message, path = problem
            if located is None:
                raise PackError(message)
            raise pack_error(located, message, path)
    return values


def config_satisfies(values: Mapping[str, Any], schema: Mapping[str, ActionParameter]) -> bool:
    """Whether loaded config values meet `schema` (templates are checked when rendered)."""
    for name, spec in schema.items():
        value = values.get(name)
        if value is None:
            if spec.required and not spec.has_default:
                return False
            continue
        if not _holds_template(value) and _schema_problem(name, spec, value, show_value=False):
            return False
    return True


def render_config(
    values: Mapping[str, Any], schema: Mapping[str, ActionParameter], kv: Any, pack_ref: str
) -> dict[str, Any]:
    """The config as an action sees it, its ``{{ st2kv... }}`` values rendered.

    As in StackStorm, templates are rendered when an action runs — a changed datastore key
    applies to the next execution without a reload — with only ``st2kv`` (and filters such
    as ``decrypt_kv``) in scope. Each template string, at any depth, is treated according
    to its own place in the schema (``properties``, ``additionalProperties``, ``items``):
    - ``secret: true`` (or inside an item declared secret): a secret key's value is
      decrypted, with or without ``decrypt_kv`` (StackStorm decrypts secret config values
      itself); elsewhere a secret key reads as its ciphertext;
    - a type other than string: the rendered text is read as JSON (datastore values are
      strings: "3" for an integer, "true" for a boolean, a JSON text for an object);
    - nothing rendered (a missing key): the value is unset (None), as in StackStorm.
    A rendered item is then checked against the schema. Raises ActionError naming the pack
    and the item, never a rendered value (it may be a secret read through decrypt_kv).
    """
    contexts = ({"st2kv": kv}, {"st2kv": revealing(kv)})
    rendered: dict[str, Any] = {}
    for name, value in values.items():
        if not _holds_template(value):
            rendered[name] = value
            continue
        spec = schema.get(name)
        try:
            value = _render(value, spec.schema if spec is not None else None, False, contexts)
        except TemplateError as exc:
            raise ActionError(f"pack {pack_ref!r} config item {name!r}: {exc}") from None
        if spec is not None and value is None:
            if spec.required:
                raise ActionError(
                    f"pack {pack_ref!r} config item {name!r} is required but its template "
                    "rendered nothing: is the datastore key it reads set?"
                )
        elif spec is not None:
            problem = _schema_problem(name, spec, value, show_value=False)
            if problem is not None:
                raise ActionError(f"pack {pack_ref!r}: rendered {problem[0]}")
        rendered[name] = value
    return rendered


def _render(
    value: Any, schema: Any, secret: bool, contexts: tuple[dict[str, Any], dict[str, Any]]
) -> Any:
    schema = schema if isinstance(schema, Mapping) else {}
    secret = secret or schema.get("secret") is True
    if isinstance(value, str):
        if not templates.is_template(value):
            return value
        out = templates.render_value(value, contexts[1] if secret else contexts[0])
        if out == "":
            return None
        wanted = schema.get("type")
        if isinstance(out, str) and isinstance(wanted, str) and wanted != "string":
            try:
                return json.loads(out)
            except ValueError:
                return out  # the schema check names the item and the type it wants
        return out
    if isinstance(value, dict):
        return {
            key: _render(item, _schema_of_key(schema, key), secret, contexts)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_render(item, schema.get("items"), secret, contexts) for item in value]
    return value


def _schema_of_key(schema: Mapping[str, Any], key: str) -> Any:
    """The schema of an object's `key`, looked up as JSON Schema (and StackStorm's config
    loader) does: properties, then the first matching patternProperties, then
    additionalProperties."""
    properties = schema.get("properties")
    if isinstance(properties, Mapping) and key in properties:
        return properties[key]
    patterns = schema.get("patternProperties")
    if isinstance(patterns, Mapping):
        for pattern, child in patterns.items():
            try:
                if regexes.search(pattern, key) is not None:
                    return child
            except RuleError:
                continue  # a pattern that cannot apply describes no key
    return schema.get("additionalProperties")


def _holds_template(value: Any) -> bool:
    if isinstance(value, str):
        return templates.is_template(value)
    if isinstance(value, dict):
        return any(_holds_template(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_template(item) for item in value)
    return False


def _schema_problem(
    name: str, spec: ActionParameter, value: Any, *, show_value: bool
) -> tuple[str, tuple[Any, ...]] | None:
    """(message, path) for the first way `value` breaks the item's schema, else None.

    With show_value False the message names only the value's type: for secret items, and
    for every rendered value (which may hold a secret read through decrypt_kv).
    """
    errors = sorted(spec.validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    error = errors[0]
    path = (name, *error.absolute_path)
    where = f"config item {'.'.join(map(str, path))!r}"
    if error.validator == "type":
        shown = repr(error.instance) if show_value else type_name(error.instance)
        message = f"{where}: expected {error.validator_value}, got {shown}"
    elif show_value:
        message = f"{where}: {error.message}"
    else:
        shown = type_name(error.instance)
        message = f"{where}: a {shown} that fails the schema's {error.validator!r}"
    return message, path
