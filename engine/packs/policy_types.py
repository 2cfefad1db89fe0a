"""The policy types a pack's ``policies/*.yaml`` may name, as StackStorm defines them.

Facts from StackStorm's ``st2common/policies/meta/*.yaml``: three types, all applied to
actions (``resource_type: action``), each with a parameters schema. A policy type's ref is
``<resource_type>.<name>`` (``action.retry``). Where StackStorm's schema lets through a
value that can only break the engine, the bound is tighter and says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.packs.action import stable_id

RETRY = "action.retry"
CONCURRENCY = "action.concurrency"
CONCURRENCY_BY_ATTR = "action.concurrency.attr"

# A threshold of 0 (StackStorm lets it through) delays every execution forever, and a
# negative one too; anything past this bound is "no limit" in all but name.
MAX_THRESHOLD = 1_000_000

_CONCURRENCY_PARAMETERS: dict[str, Any] = {
    "threshold": {
        "description": "Concurrency threshold.",
        "type": "integer",
        "required": True,
        "minimum": 1,
        "maximum": MAX_THRESHOLD,
    },
    "action": {
        "description": "Which action to perform on the execution once the concurrency "
        "threshold has been reached.",
        "type": "string",
        "default": "delay",
        "enum": ["delay", "cancel"],
    },
}


@dataclass(frozen=True)
class PolicyType:
    resource_type: str
    name: str
    description: str
    # StackStorm's parameters spec: name → JSON schema plus `required`/`default`.
    parameters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # StackStorm's implementing module, shown by `st2 policy-type get`.
    module: str = ""

    @property
    def ref(self) -> str:
        return f"{self.resource_type}.{self.name}"

    @property
    def uid(self) -> str:
        return f"policy_type:{self.resource_type}:{self.name}"

    def parameters_schema(self) -> dict[str, Any]:
        """A JSON schema for a policy's ``parameters`` of this type."""
        properties = {
            name: {k: v for k, v in spec.items() if k not in ("required", "description")}
            for name, spec in self.parameters.items()
        }
        required = sorted(name for name, spec in self.parameters.items() if spec.get("required"))
        return {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        }

    def with_defaults(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        defaults = {
            name: spec["default"] for name, spec in self.parameters.items() if "default" in spec
        }
        return {**defaults, **parameters}

    def to_api(self) -> dict[str, Any]:
        """StackStorm's PolicyTypeAPI shape."""
        return {
            "id": stable_id(self.uid),
            "uid": self.uid,
            "ref": self.ref,
            "name": self.name,
            "resource_type": self.resource_type,
            "description": self.description,
            "enabled": True,
            "module": self.module,
            "parameters": {name: dict(spec) for name, spec in self.parameters.items()},
        }


POLICY_TYPES: dict[str, PolicyType] = {
    t.ref: t
    for t in (
        PolicyType(
            "action",
            "retry",
            "Retry (re-run) failed or timed out action.",
            {
                "retry_on": {
                    "type": "string",
                    "description": "Condition to retry on.",
                    "required": True,
                    "enum": ["failure", "timeout"],
                },
                "max_retry_count": {
                    "type": "integer",
                    "description": "Maximum number of times to retry before giving up.",
                    "required": True,
                    "minimum": 1,
                    "maximum": 5,
                    "default": 2,
                },
                "delay": {
                    "type": "number",
                    "description": "Number of seconds to wait before retrying the execution.",
                    "required": False,
                    "minimum": 0,
                    "maximum": 120,
                },
            },
            "st2actions.policies.retry",
        ),
        PolicyType(
            "action",
            "concurrency",
            "Limits the concurrent executions for the action.",
            _CONCURRENCY_PARAMETERS,
            "st2actions.policies.concurrency",
        ),
        PolicyType(
            "action",
            "concurrency.attr",
            "Limits the concurrent executions for the action by attribute(s).",
            {
                **_CONCURRENCY_PARAMETERS,
                "attributes": {
                    "description": "List of attributes by which to limit the concurrency.",
                    "type": "array",
                    "uniqueItems": True,
                    # One attribute at least: without any the policy is action.concurrency.
                    "minItems": 1,
                    "maxItems": 32,
                    "items": {"type": "string", "minLength": 1, "maxLength": 255},
                },
            },
            "st2actions.policies.concurrency_by_attr",
        ),
    )
}


def policy_type(ref_or_id: str) -> PolicyType | None:
    """The policy type by ref (``action.retry``) or by the id the API shows."""
    found = POLICY_TYPES.get(ref_or_id)
    if found is not None:
        return found
    return next((t for t in POLICY_TYPES.values() if stable_id(t.uid) == ref_or_id), None)
