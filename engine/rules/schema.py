"""The JSON Schema of a rule file (StackStorm's rule format plus `once_per`).

Structure only: operator names, field keys and templates are checked by the loader,
which can give better messages (suggestions) than a schema can.
"""

from __future__ import annotations

from typing import Any

import jsonschema

from engine.model.names import MAX_NAME_CHARS, MAX_REF_CHARS

# No C0 control character, DEL or C1 control character anywhere in the name.
RULE_NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"

RULE_KEYS = (
    "name",
    "pack",
    "description",
    "enabled",
    "trigger",
    "criteria",
    "action",
    "tags",
    "type",
    "context",
    "metadata_file",
    "once_per",
    # Read-only fields StackStorm's API returns (`st2 rule get -j`); accepted so an
    # exported rule loads again, and ignored: the ref is always pack.name.
    "id",
    "ref",
    "uid",
)

_CRITERION = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "minLength": 1},
        "pattern": {},
        "condition": {"type": "string"},
    },
    "additionalProperties": False,
}

RULE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["name", "trigger", "action"],
    "properties": {
        # StackStorm takes any string (its fixtures have `st2.person.joe`, `rule space`):
        # so do we, bounded, without control characters (a NUL cannot be stored in
        # PostgreSQL, a newline would forge lines of logs and listings). URLs and CLI
        # arguments carry the name percent-encoded.
        "name": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_NAME_CHARS,
            "pattern": RULE_NAME_PATTERN,
        },
        "pack": {"type": "string", "maxLength": MAX_NAME_CHARS, "pattern": r"^[A-Za-z0-9_\-]+$"},
        "description": {"type": ["string", "null"]},
        "enabled": {"type": "boolean"},
        "trigger": {
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"type": "string", "minLength": 1, "maxLength": MAX_REF_CHARS},
                "parameters": {"type": ["object", "null"]},
                "ref": {"type": "string"},
                "description": {"type": ["string", "null"]},
            },
            "additionalProperties": False,
        },
        "criteria": {
            "type": ["object", "null"],
            "additionalProperties": _CRITERION,
        },
        "action": {
            "type": "object",
            "required": ["ref"],
            "properties": {
                "ref": {
                    "type": "string",
                    "maxLength": MAX_REF_CHARS,
                    "pattern": r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-.]+$",
                },
                "parameters": {"type": ["object", "null"]},
                "description": {"type": ["string", "null"]},
            },
            "additionalProperties": False,
        },
        "tags": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "value": {}},
                "additionalProperties": False,
            },
        },
        "type": {
            "type": "object",
            "required": ["ref"],
            "properties": {
                "ref": {"enum": ["standard", "backstop"]},
                "parameters": {"type": ["object", "null"]},
            },
            "additionalProperties": False,
        },
        "context": {"type": ["object", "null"]},
        "metadata_file": {"type": ["string", "null"]},
        "once_per": {"type": "string", "minLength": 1},
        "id": {"type": ["string", "null"]},
        "ref": {"type": ["string", "null"]},
        "uid": {"type": ["string", "null"]},
    },
    # Unknown keys are reported by the loader with a suggestion, before the schema runs.
}

RULE_VALIDATOR = jsonschema.Draft202012Validator(RULE_SCHEMA)
