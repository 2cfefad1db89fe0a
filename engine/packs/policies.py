"""A pack's ``policies/*.yaml``: StackStorm's policy metadata, read and checked.

A policy names an action (``resource_ref``), a policy type (engine.packs.policy_types)
and that type's parameters. Each file is read on its own: a broken one is reported at its
file, line and field and loses only that policy. What needs every pack loaded first — the
action exists, the attributes of ``action.concurrency.attr`` are its parameters, one
policy of a type per action — is checked by `check_policies` once all packs are in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from engine.errors import EngineError, PackError
from engine.model.names import MAX_NAME_CHARS, MAX_REF_CHARS
from engine.packs.action import Action, stable_id
from engine.packs.metadata import (
    check_schema,
    metadata_files,
    pack_error,
    read_metadata,
    require_mapping,
    schema_error,
)
from engine.packs.policy_types import CONCURRENCY_BY_ATTR, POLICY_TYPES
from engine.rules.yamlsource import Located, format_path, suggestion

POLICIES_DIR = "policies"

# StackStorm's PolicyAPI schema (contrib/schemas/policy.json), names bounded.
POLICY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "resource_ref", "policy_type"],
    "properties": {
        "id": {"type": "string"},
        "uid": {"type": "string"},
        "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
        "pack": {"type": "string", "maxLength": MAX_NAME_CHARS},
        "ref": {"type": "string", "maxLength": MAX_REF_CHARS},
        "description": {"type": ["string", "null"]},
        "enabled": {"type": "boolean"},
        "resource_ref": {"type": "string", "minLength": 1, "maxLength": MAX_REF_CHARS},
        "policy_type": {"type": "string", "minLength": 1, "maxLength": MAX_REF_CHARS},
        "parameters": {"type": ["object", "null"]},
        "metadata_file": {"type": "string"},
    },
    "additionalProperties": False,
}
_POLICY_VALIDATOR = jsonschema.Draft202012Validator(POLICY_SCHEMA)


@dataclass(frozen=True, eq=False)
class Policy:
    name: str
    pack: str
    resource_ref: str
    policy_type: str
    # The type's parameters, validated, with the type's defaults filled in.
    parameters: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    enabled: bool = True
    metadata_file: str = ""  # relative to the pack, as StackStorm records it
    source: str | None = None
    # The parsed file, so checks made after every pack loaded point at the right line.
    located: Located | None = field(default=None, repr=False)

    @property
    def ref(self) -> str:
        return f"{self.pack}.{self.name}"

    @property
    def uid(self) -> str:
        return f"policy:{self.pack}:{self.name}"

    def error(self, message: str, path: tuple[Any, ...] = ()) -> PackError:
        if self.located is None:
            return PackError(message, file=self.source)
        return pack_error(self.located, message, path)

    def to_api(self) -> dict[str, Any]:
        """StackStorm's PolicyAPI shape."""
        return {
            "id": stable_id(self.uid),
            "uid": self.uid,
            "ref": self.ref,
            "name": self.name,
            "pack": self.pack,
            "description": self.description,
            "enabled": self.enabled,
            "resource_ref": self.resource_ref,
            "policy_type": self.policy_type,
            "parameters": dict(self.parameters),
            "metadata_file": self.metadata_file,
        }


def load_policies(
    pack_dir: Path, pack_ref: str, files: list[str], errors: list[EngineError]
) -> dict[str, Policy]:
    """The pack's policies by name; each problem appended to `errors`, located."""
    policies: dict[str, Policy] = {}
    for file in metadata_files(pack_dir / POLICIES_DIR):
        relative = f"{POLICIES_DIR}/{file.name}"
        files.append(relative)
        try:
            policy = read_policy(read_metadata(file), pack_ref, relative)
        except PackError as exc:
            errors.append(exc)
            continue
        first = policies.get(policy.name)
        if first is not None:
            errors.append(
                policy.error(
                    f"policy {policy.ref!r} is already defined in {first.source}; policy "
                    "names must be unique in a pack",
                    ("name",),
                )
            )
            continue
        policies[policy.name] = policy
    return policies


def read_policy(located: Located, pack_ref: str, metadata_file: str = "") -> Policy:
    """One policy file; a located PackError names the field that is wrong."""
    data = require_mapping(located, "a policy file")
    check_schema(located, data, _POLICY_VALIDATOR)
    pack = data.get("pack") or pack_ref
    if pack != pack_ref:
        raise pack_error(
            located,
            f"policy says pack {pack!r} but lives in pack {pack_ref!r}; remove 'pack' or "
            "make it match",
            ("pack",),
        )
    type_ref = data["policy_type"]
    policy_type = POLICY_TYPES.get(type_ref)
    if policy_type is None:
        raise pack_error(
            located,
            f"unknown policy_type {type_ref!r}{suggestion(type_ref, POLICY_TYPES)}; known: "
            f"{', '.join(POLICY_TYPES)}",
            ("policy_type",),
        )
    action_pack, _, action_name = data["resource_ref"].partition(".")
    if not action_pack or not action_name:
        raise pack_error(
            located,
            f"resource_ref {data['resource_ref']!r} is not an action ref (<pack>.<action>)",
            ("resource_ref",),
        )
    # Defaults first, as StackStorm validates: `max_retry_count` is required and defaulted.
    parameters = policy_type.with_defaults(data.get("parameters") or {})
    validator = jsonschema.Draft202012Validator(policy_type.parameters_schema())
    problems = sorted(
        validator.iter_errors(parameters), key=lambda e: [str(p) for p in e.absolute_path]
    )
    if problems:
        raise _parameter_error(located, problems[0])
    return Policy(
        name=data["name"],
        pack=pack_ref,
        resource_ref=data["resource_ref"],
        policy_type=type_ref,
        parameters=parameters,
        description=data.get("description") or "",
        enabled=data.get("enabled", True),
        metadata_file=metadata_file,
        source=located.file,
        located=located,
    )


def _parameter_error(located: Located, error: jsonschema.ValidationError) -> PackError:
    # Located inside `parameters`, and the message names the field: "parameters.delay: ...".
    inner = schema_error(located, error)
    path = ("parameters", *error.absolute_path)
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        path = ("parameters", missing)
    line, column = located.position(path)
    return PackError(
        f"{format_path(path)}: {inner.message}",
        file=located.file,
        line=line,
        column=column,
        field=format_path(path),
    )


def check_policies(
    policies: Sequence[Policy],
    find_action: Callable[[str], Action | None],
    errors: list[EngineError],
) -> set[int]:
    """Check policies against the loaded actions; returns the ids (``id()``) of those that
    must be dropped, each with its error appended to `errors`."""
    dropped: set[int] = set()
    seen: dict[tuple[str, str], Policy] = {}
    for policy in policies:
        action = find_action(policy.resource_ref)
        if action is None:
            errors.append(
                policy.error(
                    f"policy {policy.ref!r} is for action {policy.resource_ref!r}, which is "
                    "not loaded: check resource_ref and that its pack loaded",
                    ("resource_ref",),
                )
            )
            dropped.add(id(policy))
            continue
        if policy.policy_type == CONCURRENCY_BY_ATTR:
            known = list(action.parameters)
            for index, name in enumerate(policy.parameters.get("attributes") or []):
                if name not in action.parameters:
                    errors.append(
                        policy.error(
                            f"attribute {name!r} is not a parameter of {action.ref}"
                            f"{suggestion(name, known)}",
                            ("parameters", "attributes", index),
                        )
                    )
                    dropped.add(id(policy))
            if id(policy) in dropped:
                continue
        key = (policy.resource_ref, policy.policy_type)
        first = seen.get(key)
        if first is not None and policy.enabled and first.enabled:
            # StackStorm keeps one policy per (resource_ref, policy_type).
            errors.append(
                policy.error(
                    f"action {policy.resource_ref!r} already has a {policy.policy_type} policy "
                    f"({first.ref}, {first.source}); this one is ignored",
                    ("policy_type",),
                )
            )
            dropped.add(id(policy))
            continue
        if policy.enabled:
            seen[key] = policy
    return dropped
