"""Reading one pack metadata file and reporting its errors as ``file:line:col``.

Pack, action, webhook and config files share the rule loader's YAML reader
(:mod:`engine.rules.yamlsource`) so every error points at the line an author must fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema

from engine.errors import PackError, RuleLoadError
from engine.model.names import too_long
from engine.rules.yamlsource import Located, format_path, parse_yaml, suggestion, type_name
from engine.rules.yamlsource import Path as FieldPath

METADATA_SUFFIXES = (".yaml", ".yml")


def read_metadata(file: Path) -> Located:
    """Parse one metadata file; PackError (located) if it cannot be read or parsed."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PackError(f"cannot read file: {exc.strerror}", file=str(file)) from None
    except UnicodeDecodeError:
        raise PackError("file is not UTF-8 text", file=str(file)) from None
    try:
        return parse_yaml(text, str(file))
    except RuleLoadError as exc:
        raise PackError(exc.message, file=exc.file, line=exc.line, column=exc.column) from None


def pack_error(located: Located, message: str, path: FieldPath = (), *, at_key: bool = False):
    """A PackError at ``path`` of the file (at its key, for unknown-key errors)."""
    return located.error(message, path, at_key=at_key, error_cls=PackError)


def require_mapping(located: Located, what: str) -> dict[str, Any]:
    if not isinstance(located.data, dict):
        got = type_name(located.data)
        raise pack_error(located, f"{what} must be a mapping of fields, got {got}")
    return located.data


def reject_unknown_keys(
    located: Located, data: dict[str, Any], known: Iterable[str], what: str, path: FieldPath = ()
) -> None:
    known = list(known)
    for key in data:
        if key not in known:
            raise pack_error(
                located,
                f"unknown {what} field {key!r}{suggestion(str(key), known)}",
                (*path, key),
                at_key=True,
            )


def check_schema(located: Located, data: Any, validator: jsonschema.protocols.Validator) -> None:
    """Raise a located PackError for the first schema violation (in document order)."""
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise schema_error(located, errors[0])


def schema_error(located: Located, error: jsonschema.ValidationError) -> PackError:
    path = tuple(error.absolute_path)
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        message = f"missing required field {missing!r}"
    elif error.validator == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(known))
        bad = extra[0] if extra else "?"
        message = f"unknown field {bad!r}{suggestion(str(bad), known)}"
        return pack_error(located, message, (*path, bad), at_key=True)
    elif error.validator == "type":
        expected = expected_types(error.validator_value)
        message = f"expected {expected}, got {type_name(error.instance)}"
    elif error.validator == "enum":
        choices = ", ".join(map(str, error.validator_value))
        message = f"expected one of {choices}, got {error.instance!r}"
    elif error.validator == "maxLength":
        message = f"{format_path(path)} {too_long(len(error.instance), error.validator_value)}"
    elif error.validator == "pattern":
        message = f"{error.instance!r} is not allowed here (must match {error.validator_value})"
    else:
        message = error.message
    return pack_error(located, message, path)


def expected_types(expected: Any) -> str:
    return " or ".join(expected) if isinstance(expected, list) else str(expected)


def metadata_files(folder: Path) -> list[Path]:
    """The metadata files directly in ``folder`` (StackStorm does not recurse), sorted."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in METADATA_SUFFIXES and p.is_file())
