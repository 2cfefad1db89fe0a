"""A pack (``pack.yaml`` and what its folders hold) and the set of packs loaded together."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from engine.errors import ActionError, EngineError
from engine.model.names import MAX_NAME_CHARS
from engine.packs.action import Action, stable_id
from engine.packs.metadata import (
    check_schema,
    pack_error,
    reject_unknown_keys,
    require_mapping,
    suggestion,
)
from engine.packs.parameters import ActionParameter
from engine.packs.policies import Policy
from engine.packs.sensors import SensorSpec
from engine.packs.triggers import TriggerType
from engine.rules.rule import Rule
from engine.rules.yamlsource import Located

# Facts from StackStorm's PackAPI schema and st2common.constants.pack.
PACK_REF_PATTERN = r"^[a-z0-9_]+$"
PACK_VERSION_PATTERN = (
    r"^(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)"
    r"(?:-[\da-z\-]+(?:\.[\da-z\-]+)*)?(?:\+[\da-z\-]+(?:\.[\da-z\-]+)*)?$"
)
_STRINGS = {"type": "array", "items": {"type": "string"}}

PACK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "description", "version", "author"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
        "ref": {"type": "string", "maxLength": MAX_NAME_CHARS, "pattern": PACK_REF_PATTERN},
        "description": {"type": "string"},
        "version": {"type": "string", "pattern": PACK_VERSION_PATTERN},
        "author": {"type": "string"},
        "email": {"type": "string"},
        "keywords": _STRINGS,
        "contributors": _STRINGS,
        "dependencies": _STRINGS,
        "files": _STRINGS,
        "python_versions": {
            "type": "array",
            "items": {"type": "string", "enum": ["2", "3"]},
            "uniqueItems": True,
        },
        "stackstorm_version": {"type": "string"},
        "system": {"type": "object"},
        # Read-only fields of StackStorm's API: accepted so an exported pack loads again.
        "id": {"type": "string"},
        "uid": {"type": "string"},
        "path": {"type": "string"},
    },
}
PACK_KEYS = tuple(PACK_SCHEMA["properties"])
_PACK_VALIDATOR = jsonschema.Draft202012Validator(PACK_SCHEMA)


@dataclass(frozen=True)
class WebhookSpec:
    """One ``webhooks/<file>.yaml``: settings of the hook ``/webhooks/<name>``.

    The settings are kept as written; the auth work defines and checks their schema.
    """

    name: str
    pack: str
    settings: Mapping[str, Any]
    source: str | None = None
    line: int | None = None


@dataclass(frozen=True, eq=False)
class Pack:
    ref: str
    name: str
    path: str
    metadata: Mapping[str, Any]
    actions: Mapping[str, Action] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    webhooks: Mapping[str, WebhookSpec] = field(default_factory=dict)
    config_schema: Mapping[str, Any] = field(default_factory=dict)
    # The schema's items as parameters (type, secret, validator), for rendered values.
    config_items: Mapping[str, ActionParameter] = field(default_factory=dict)
    # The pack config (<configs>/<ref>.yaml) with the schema's defaults applied.
    config: Mapping[str, Any] = field(default_factory=dict)
    # The config file read (None: there is none), and why the config did not load (its
    # actions then fail with this reason rather than run without their config).
    config_file: str | None = None
    config_error: str | None = None
    # Files read from the pack, relative to it (StackStorm's PackAPI ``files``).
    files: tuple[str, ...] = ()
    # Trigger types by name (``triggers/*.yaml`` and those its sensors declare).
    trigger_types: Mapping[str, TriggerType] = field(default_factory=dict)
    # Sensors by class name (``sensors/*.yaml``).
    sensors: Mapping[str, SensorSpec] = field(default_factory=dict)
    # Policies by name (``policies/*.yaml``), those that passed every check.
    policies: Mapping[str, Policy] = field(default_factory=dict)

    @property
    def uid(self) -> str:
        return f"pack:{self.ref}"

    def to_api(self) -> dict[str, Any]:
        """StackStorm's PackAPI shape."""
        meta = self.metadata
        return {
            "id": stable_id(self.uid),
            "uid": self.uid,
            "ref": self.ref,
            "name": self.name,
            "description": meta.get("description", ""),
            "version": meta.get("version", ""),
            "author": meta.get("author", ""),
            "email": meta.get("email", ""),
            "keywords": list(meta.get("keywords") or []),
            "contributors": list(meta.get("contributors") or []),
            "dependencies": list(meta.get("dependencies") or []),
            "python_versions": list(meta.get("python_versions") or []),
            "stackstorm_version": meta.get("stackstorm_version", ""),
            "system": dict(meta.get("system") or {}),
            "files": list(self.files),
            "path": self.path,
        }


@dataclass(frozen=True, eq=False)
class PackSet:
    packs: Mapping[str, Pack] = field(default_factory=dict)
    # Every problem found while loading; what loaded despite them is usable.
    errors: tuple[EngineError, ...] = ()

    def action(self, ref: str) -> Action:
        pack_ref, _, name = ref.partition(".")
        pack = self.packs.get(pack_ref)
        action = pack.actions.get(name) if pack is not None else None
        if action is None:
            known = [a.ref for a in self.actions()]
            raise ActionError(f"unknown action {ref!r}{suggestion(ref, known)}")
        return action

    def actions(self) -> list[Action]:
        return sorted(
            (a for pack in self.packs.values() for a in pack.actions.values()), key=lambda a: a.ref
        )

    def rules(self) -> list[Rule]:
        return [rule for pack in self.packs.values() for rule in pack.rules]

    def trigger_types(self) -> list[TriggerType]:
        return sorted(
            (t for pack in self.packs.values() for t in pack.trigger_types.values()),
            key=lambda t: t.ref,
        )

    def trigger_parameter_schemas(self) -> dict[str, Mapping[str, Any]]:
        """The parameters schema of every trigger type that declares one, by ref (what a
        rule's trigger parameters are checked against)."""
        return {t.ref: t.parameters_schema for t in self.trigger_types() if t.parameters_schema}

    def trigger_type(self, ref: str) -> TriggerType | None:
        pack_ref, _, name = ref.partition(".")
        pack = self.packs.get(pack_ref)
        return pack.trigger_types.get(name) if pack is not None else None

    def sensors(self) -> list[SensorSpec]:
        return sorted(
            (s for pack in self.packs.values() for s in pack.sensors.values()),
            key=lambda s: s.ref,
        )

    def policies(self) -> list[Policy]:
        return sorted(
            (p for pack in self.packs.values() for p in pack.policies.values()),
            key=lambda p: (p.pack, p.name),
        )

    def action_policies(self, action_ref: str) -> list[Policy]:
        """The enabled policies applied to `action_ref` (asked for every execution)."""
        return self._policies_by_action.get(action_ref, [])

    @functools.cached_property
    def _policies_by_action(self) -> dict[str, list[Policy]]:
        index: dict[str, list[Policy]] = {}
        for policy in self.policies():
            if policy.enabled:
                index.setdefault(policy.resource_ref, []).append(policy)
        return index

    def find_action(self, ref: str) -> Action | None:
        pack_ref, _, name = ref.partition(".")
        pack = self.packs.get(pack_ref)
        return pack.actions.get(name) if pack is not None else None

    def webhooks(self) -> dict[str, WebhookSpec]:
        """Hook name -> settings, over every pack (the loader keeps names unique)."""
        return {name: spec for pack in self.packs.values() for name, spec in pack.webhooks.items()}


def read_pack_metadata(located: Located) -> tuple[str, dict[str, Any]]:
    """(ref, metadata) of a ``pack.yaml``; raises a located PackError."""
    data = dict(require_mapping(located, "pack.yaml"))
    reject_unknown_keys(located, data, PACK_KEYS, "pack.yaml")
    # YAML reads `version: 0.1` as a number; StackStorm normalises it to "0.1.0".
    version = data.get("version")
    if isinstance(version, int | float) and not isinstance(version, bool):
        data["version"] = str(version)
    if isinstance(data.get("version"), str) and re.fullmatch(r"\d+\.\d+", data["version"]):
        data["version"] += ".0"
    if isinstance(data.get("python_versions"), list):
        data["python_versions"] = [
            str(v) if isinstance(v, int) and not isinstance(v, bool) else v
            for v in data["python_versions"]
        ]
    check_schema(located, data, _PACK_VALIDATOR)
    ref = data.get("ref")
    if ref is None:
        ref = data["name"]
        if not re.fullmatch(PACK_REF_PATTERN, ref):
            raise pack_error(
                located,
                f"pack name {ref!r} cannot be a ref (only a-z, 0-9 and _): add a 'ref' field",
                ("name",),
            )
    return ref, data
