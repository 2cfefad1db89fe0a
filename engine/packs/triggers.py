"""Trigger types: what a pack's ``triggers/*.yaml`` and its sensors declare, and the
check of a payload against a type's ``payload_schema``.

Facts from StackStorm: a trigger type's ref is ``<pack>.<name>``; its ``payload_schema``
and ``parameters_schema`` are JSON schemas (draft 4, as StackStorm's validators, which also
take draft 3's ``required: true`` on a property, as StackStorm's own fixtures write it); the
system types (``core.st2.webhook``, the timers, the generic action and notify triggers)
ship with the built-in core pack (``builtin/core/triggers``). A payload that breaks the
schema is refused naming the field (``validate_trigger_payload``); properties the schema
does not name are allowed, as JSON schema allows them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from engine.errors import EngineError, IngestError, PackError
from engine.model.names import MAX_NAME_CHARS
from engine.packs.action import stable_id
from engine.packs.metadata import (
    metadata_files,
    pack_error,
    read_metadata,
    require_mapping,
)
from engine.rules.trigger_parameters import draft4_schema
from engine.rules.yamlsource import Located

# A message about a payload quotes at most this much of it (payloads are hostile and big).
_MAX_QUOTED = 200

TRIGGER_TYPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
        "pack": {"type": "string"},
        "description": {"type": "string"},
        "payload_schema": {"type": "object"},
        "parameters_schema": {"type": "object"},
        "tags": {"type": "array"},
        "metadata_file": {"type": "string"},
        # Read-only fields of StackStorm's API: accepted so an exported type loads again.
        "id": {"type": "string"},
        "uid": {"type": "string"},
        "ref": {"type": "string"},
    },
}
_TYPE_VALIDATOR = jsonschema.Draft4Validator(TRIGGER_TYPE_SCHEMA)


@dataclass(frozen=True, eq=False)
class TriggerType:
    pack: str
    name: str
    description: str = ""
    payload_schema: Mapping[str, Any] = field(default_factory=dict)
    parameters_schema: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[Any, ...] = ()
    source: str | None = None
    line: int | None = None
    # The sensor (its ref) that declared it, when a sensor did.
    sensor: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.pack}.{self.name}"

    @property
    def uid(self) -> str:
        return f"trigger_type:{self.pack}:{self.name}"

    def to_api(self, pack_path: str | None = None) -> dict[str, Any]:
        """StackStorm's TriggerTypeAPI shape (``st2 trigger list`` / ``get``)."""
        metadata_file = ""
        if self.source and pack_path:
            try:
                metadata_file = Path(self.source).relative_to(pack_path).as_posix()
            except ValueError:
                metadata_file = ""
        return {
            "id": stable_id(self.uid),
            "uid": self.uid,
            "ref": self.ref,
            "name": self.name,
            "pack": self.pack,
            "description": self.description,
            "payload_schema": dict(self.payload_schema),
            "parameters_schema": dict(self.parameters_schema),
            "tags": list(self.tags),
            "metadata_file": metadata_file,
        }

    def validate_payload(self, payload: Any) -> None:
        """Raise IngestError (400) naming the first field that breaks ``payload_schema``."""
        if not self.payload_schema:
            return
        validator = _payload_validator(self)
        errors = sorted(validator.iter_errors(payload), key=lambda e: list(map(str, e.path)))
        if not errors:
            return
        error = errors[0]
        where = ".".join(str(p) for p in error.absolute_path)
        if error.validator == "required" and "'" in error.message:
            where = ".".join(filter(None, (where, error.message.split("'")[1])))
        message = error.message
        if len(message) > _MAX_QUOTED:
            message = message[:_MAX_QUOTED] + "..."
        field_text = f"field {where!r}" if where else "the payload"
        raise IngestError(
            f"payload for trigger type {self.ref!r} is invalid: {field_text}: {message}", 400
        )


# Validators by (ref, schema text): building one checks the schema, done once per type.
_validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}


def _payload_validator(trigger_type: TriggerType) -> jsonschema.protocols.Validator:
    key = (trigger_type.ref, json.dumps(trigger_type.payload_schema, sort_keys=True, default=str))
    validator = _validators.get(key)
    if validator is None:
        validator = jsonschema.Draft4Validator(draft4_schema(trigger_type.payload_schema))
        if len(_validators) < 10_000:
            _validators[key] = validator
    return validator


def build_trigger_type(
    located: Located,
    data: Mapping[str, Any],
    pack_ref: str,
    path: tuple[Any, ...] = (),
    *,
    sensor: str | None = None,
) -> TriggerType:
    """A TriggerType from its mapping (a ``triggers/`` file, or an item of a sensor's
    ``trigger_types`` at ``path``); raises a located PackError."""
    errors = sorted(_TYPE_VALIDATOR.iter_errors(data), key=lambda e: list(map(str, e.path)))
    if errors:
        error = errors[0]
        where = (*path, *error.absolute_path)
        if error.validator == "additionalProperties":
            extra = sorted(set(error.instance) - set(TRIGGER_TYPE_SCHEMA["properties"]))
            message = f"unknown trigger type field {extra[0]!r}" if extra else error.message
            raise pack_error(located, message, (*where, *extra[:1]), at_key=True)
        raise pack_error(located, f"trigger type: {error.message}", where)
    declared = data.get("pack")
    if declared is not None and declared != pack_ref:
        raise pack_error(
            located,
            f"trigger type says pack {declared!r} but lives in pack {pack_ref!r}; "
            "remove 'pack' or make it match",
            (*path, "pack"),
        )
    for key in ("payload_schema", "parameters_schema"):
        schema = data.get(key)
        if schema:
            try:
                jsonschema.Draft4Validator.check_schema(draft4_schema(schema))
            except jsonschema.SchemaError as exc:
                raise pack_error(
                    located, f"{key} is not a valid JSON schema: {exc.message}", (*path, key)
                ) from None
    line, _ = located.position(path)
    return TriggerType(
        pack=pack_ref,
        name=data["name"],
        description=data.get("description", ""),
        payload_schema=dict(data.get("payload_schema") or {}),
        parameters_schema=dict(data.get("parameters_schema") or {}),
        tags=tuple(data.get("tags") or ()),
        source=located.file,
        line=line,
        sensor=sensor,
    )


def load_trigger_types(
    pack_dir: Path, ref: str, files: list[str], errors: list[EngineError]
) -> dict[str, TriggerType]:
    """``triggers/*.yaml`` of a pack, by name; a broken file loses that type only."""
    types: dict[str, TriggerType] = {}
    for file in metadata_files(pack_dir / "triggers"):
        files.append(Path(file).relative_to(pack_dir).as_posix())
        try:
            located = read_metadata(file)
            data = require_mapping(located, "a trigger type file")
            trigger_type = build_trigger_type(located, data, ref)
        except PackError as exc:
            errors.append(exc)
            continue
        add_trigger_type(types, trigger_type, errors)
    return types


def add_trigger_type(
    types: dict[str, TriggerType], trigger_type: TriggerType, errors: list[EngineError]
) -> None:
    first = types.get(trigger_type.name)
    if first is not None:
        errors.append(
            PackError(
                f"trigger type {trigger_type.ref!r} is already defined at "
                f"{first.source}:{first.line or 1}; trigger type names must be unique in a pack",
                file=trigger_type.source,
                line=trigger_type.line,
            )
        )
        return
    types[trigger_type.name] = trigger_type


def trigger_uid(trigger_type: str, parameters: Mapping[str, Any]) -> tuple[str, str]:
    """(name, uid) of the trigger a rule's type and parameters make, as StackStorm names
    it: a parameterless trigger shares its type's name; otherwise a stable hash names it."""
    pack, _, name = trigger_type.partition(".")
    if not parameters:
        return name, f"trigger:{pack}:{name}:"
    digest = hashlib.md5(
        json.dumps(parameters, sort_keys=True, default=str).encode(), usedforsecurity=False
    ).hexdigest()
    return f"{name}.{digest[:12]}", f"trigger:{pack}:{name}:{digest}"


def trigger_record(
    trigger_type: str, parameters: Mapping[str, Any], description: str = ""
) -> dict[str, Any]:
    """A trigger in StackStorm's TriggerAPI shape (what `/api/v1/triggers` lists and a
    sensor's add_trigger/update_trigger/remove_trigger receive)."""
    pack, _, _ = trigger_type.partition(".")
    name, uid = trigger_uid(trigger_type, parameters)
    return {
        "id": stable_id(uid),
        "uid": uid,
        "ref": f"{pack}.{name}",
        "name": name,
        "pack": pack,
        "type": trigger_type,
        "parameters": dict(parameters),
        "description": description,
    }


def derived_triggers(trigger_types: Any, rules: Any) -> list[dict[str, Any]]:
    """The triggers that exist, as StackStorm would have them: one per parameterless
    trigger type (its shadow trigger), one per distinct (type, parameters) a rule uses.
    Derived from the loaded packs and rules, never stored; sorted by ref."""
    found: dict[str, dict[str, Any]] = {}
    for trigger_type in trigger_types:
        if not trigger_type.parameters_schema:
            item = trigger_record(trigger_type.ref, {}, trigger_type.description)
            found[item["uid"]] = item
    for rule in rules:
        item = trigger_record(rule.trigger_type, dict(rule.trigger_parameters or {}))
        found.setdefault(item["uid"], item)
    return sorted(found.values(), key=lambda t: t["ref"])
