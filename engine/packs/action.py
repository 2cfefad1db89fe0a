"""An action: a pack's metadata file naming a runner, an entry point and parameters.

The file format is StackStorm's (``actions/<name>.yaml``) plus Hookyard's ``retry``
(``once``: a run cut short by a dead worker is retried once; ``never``: it is abandoned).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jsonschema

from engine.errors import RunnerError, UnsupportedRunnerError, WorkflowError
from engine.model.names import MAX_NAME_CHARS
from engine.packs.metadata import (
    check_schema,
    pack_error,
    reject_unknown_keys,
    require_mapping,
    suggestion,
)
from engine.packs.parameters import ActionParameter, check_definitions, merge_with_runner
from engine.packs.values import Renderer, prepare_values
from engine.rules.yamlsource import Located
from engine.workflows.chain_spec import parse_chain
from engine.workflows.spec import parse_workflow

RETRY_ONCE = "once"
RETRY_NEVER = "never"
# Runners that execute a file, so an action using one must name its entry point.
ORQUESTA = "orquesta"
ACTION_CHAIN = "action-chain"
RUNNERS_WITH_ENTRY_POINT = frozenset(
    {"local-shell-script", "python-script", ORQUESTA, ACTION_CHAIN}
)
# Runners whose executions are stepped by the workflows role, their children running as
# ordinary executions (engine.workers.workflows).
WORKFLOW_RUNNERS = frozenset({ORQUESTA, ACTION_CHAIN})

ACTION_KEYS = (
    "name",
    "runner_type",
    "entry_point",
    "enabled",
    "description",
    "parameters",
    "output_schema",
    "tags",
    "notify",
    "retry",
    "pack",
    # Read-only fields of StackStorm's API (`st2 action get -j`): accepted, not used.
    "ref",
    "uid",
    "id",
    "metadata_file",
)

ACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "runner_type"],
    "properties": {
        "name": {"type": "string", "maxLength": MAX_NAME_CHARS, "pattern": r"^[\w.\-]+$"},
        "runner_type": {"type": "string", "minLength": 1},
        "entry_point": {"type": ["string", "null"]},
        "enabled": {"type": "boolean"},
        "description": {"type": ["string", "null"]},
        "parameters": {"type": ["object", "null"]},
        "output_schema": {"type": ["object", "null"]},
        "tags": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "value": {}},
                "additionalProperties": False,
            },
        },
        "notify": {"type": ["object", "null"]},
        "retry": {"enum": [RETRY_ONCE, RETRY_NEVER]},
        "pack": {"type": "string"},
        "ref": {"type": "string"},
        "uid": {"type": "string"},
        "id": {"type": "string"},
        "metadata_file": {"type": "string"},
    },
}
_ACTION_VALIDATOR = jsonschema.Draft202012Validator(ACTION_SCHEMA)

# StackStorm's runners that Hookyard does not have: an action naming one is a known gap
# (said so, without a "did you mean" toward a local runner), not a typo.
STACKSTORM_RUNNERS_NOT_RUN = frozenset(
    {
        "remote-shell-cmd",
        "remote-shell-script",
        "winrm-cmd",
        "winrm-ps-cmd",
        "winrm-ps-script",
        "windows-cmd",
        "windows-script",
        "inquirer",
        "mistral-v2",
        "cloudslang",
    }
)


class RunnerCatalog(Protocol):
    """Runners by name, as ``engine.runners.RunnerRegistry`` offers them."""

    def get(self, name: str) -> Any: ...  # an object with .parameters; RunnerError if unknown

    def names(self) -> list[str]: ...


def stable_id(uid: str) -> str:
    """A 24-hex-digit id (StackStorm ids are ObjectIds) that stays the same across loads."""
    return hashlib.sha1(uid.encode()).hexdigest()[:24]


@dataclass(frozen=True, eq=False)
class Action:
    ref: str
    name: str
    pack: str
    runner_type: str
    # Absolute path of the script or module, or None for runners that need none.
    entry_point: str | None
    enabled: bool
    description: str | None
    # Runner and action parameters merged, StackStorm-style: name -> definition.
    parameters: Mapping[str, Mapping[str, Any]]
    parameter_specs: Mapping[str, ActionParameter]
    # The parameters as the action file declares them (what StackStorm's API returns).
    declared_parameters: Mapping[str, Any] = field(default_factory=dict)
    output_schema: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[Mapping[str, Any], ...] = ()
    notify: Mapping[str, Any] = field(default_factory=dict)
    retry: str = RETRY_ONCE
    # The entry point as written (relative to actions/), for the API.
    entry_point_declared: str = ""
    source: str | None = None
    line: int | None = None
    # The metadata file relative to its pack (``actions/echo.yaml``).
    metadata_file: str | None = None
    # An orquesta action's workflow (engine.workflows.spec.WorkflowSpec) or an action-chain
    # action's chain (engine.workflows.chain_spec.ChainSpec), read at load.
    workflow: Any = None
    # Why this action cannot run (its workflow file is broken, every problem located): it
    # stays loaded so that running it says this, not "unknown action".
    broken: str | None = None

    @property
    def uid(self) -> str:
        return f"action:{self.pack}:{self.name}"

    @property
    def secret_parameters(self) -> frozenset[str]:
        return frozenset(n for n, spec in self.parameter_specs.items() if spec.secret)

    @property
    def positions(self) -> dict[str, int]:
        specs = self.parameter_specs.values()
        return {spec.name: spec.position for spec in specs if spec.position is not None}

    @property
    def timeout(self) -> float | None:
        """The default of the ``timeout`` parameter, if the action or its runner has one."""
        spec = self.parameter_specs.get("timeout")
        default = spec.default if spec is not None else None
        if isinstance(default, int | float) and not isinstance(default, bool):
            return float(default)
        return None

    def prepare_parameters(
        self, given: Mapping[str, Any], *, render: Renderer | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(runner parameters, action parameters) for one run; ActionError naming the
        parameter for an unknown, immutable, missing or invalid one."""
        return prepare_values(self.ref, self.parameter_specs, given, render)

    def to_api(self) -> dict[str, Any]:
        """StackStorm's ActionAPI shape."""
        return {
            "id": stable_id(self.uid),
            "uid": self.uid,
            "ref": self.ref,
            "name": self.name,
            "pack": self.pack,
            "description": self.description or "",
            "enabled": self.enabled,
            "runner_type": self.runner_type,
            "entry_point": self.entry_point_declared,
            "parameters": dict(self.declared_parameters),
            "output_schema": dict(self.output_schema),
            "tags": [dict(tag) for tag in self.tags],
            "notify": dict(self.notify),
            "metadata_file": self.metadata_file or "",
        }


def build_action(
    located: Located, *, pack_ref: str, pack_dir: Path, runners: RunnerCatalog
) -> Action:
    """The action of one metadata file inside ``pack_dir``; raises a located PackError."""
    data = require_mapping(located, "an action file")
    reject_unknown_keys(located, data, ACTION_KEYS, "action")
    check_schema(located, data, _ACTION_VALIDATOR)
    name = data["name"]
    if data.get("pack") not in (None, pack_ref):
        raise pack_error(
            located,
            f"action says pack {data['pack']!r} but lives in pack {pack_ref!r}; "
            "remove 'pack' or make it match",
            ("pack",),
        )
    runner_type = data["runner_type"]
    try:
        runner = runners.get(runner_type)
    except RunnerError:
        known = runners.names()
        if runner_type in STACKSTORM_RUNNERS_NOT_RUN:
            raise located.error(
                f"runner_type {runner_type!r} is a StackStorm runner Hookyard does not run; "
                f"runners here: {', '.join(known)}",
                ("runner_type",),
                error_cls=UnsupportedRunnerError,
            ) from None
        raise pack_error(
            located,
            f"unknown runner_type {runner_type!r}{suggestion(runner_type, known)}; "
            f"known runners: {', '.join(known)}",
            ("runner_type",),
        ) from None
    declared = check_definitions(located, data.get("parameters"), ("parameters",))
    specs = merge_with_runner(located, runner_type, runner.parameters, declared)
    entry_point = _entry_point(located, data.get("entry_point") or "", runner_type, pack_dir)
    workflow, broken = (
        _workflow(entry_point, runner_type) if runner_type in WORKFLOW_RUNNERS else (None, None)
    )
    line, _ = located.position(())
    source = located.file
    return Action(
        ref=f"{pack_ref}.{name}",
        name=name,
        pack=pack_ref,
        runner_type=runner_type,
        entry_point=entry_point,
        enabled=data.get("enabled", True),
        description=data.get("description"),
        parameters={n: dict(spec.schema) for n, spec in specs.items()},
        parameter_specs=specs,
        declared_parameters=declared,
        output_schema=data.get("output_schema") or {},
        tags=tuple(data.get("tags") or ()),
        notify=data.get("notify") or {},
        retry=data.get("retry", RETRY_ONCE),
        entry_point_declared=data.get("entry_point") or "",
        source=source,
        line=line,
        metadata_file=os.path.relpath(source, pack_dir) if source else None,
        workflow=workflow,
        broken=broken,
    )


def _workflow(path: str | None, runner_type: str) -> tuple[Any, str | None]:
    """(the workflow or chain spec, None), or (None, why it cannot run) for a broken file."""
    assert path is not None  # both need an entry point: checked before
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path}: the workflow file cannot be read: {exc}"
    try:
        parse = parse_chain if runner_type == ACTION_CHAIN else parse_workflow
        return parse(text, path), None
    except WorkflowError as exc:
        return None, str(exc)


def _entry_point(located: Located, declared: str, runner_type: str, pack_dir: Path) -> str | None:
    if not declared:
        if runner_type in RUNNERS_WITH_ENTRY_POINT:
            raise pack_error(
                located,
                f"runner {runner_type!r} runs a file: set entry_point to a script or module "
                "beside this file in actions/",
                (),
            )
        return None
    actions_dir = Path(located.file).parent if located.file else pack_dir / "actions"
    path = Path(os.path.abspath(actions_dir / declared))
    if not path.resolve().is_relative_to(pack_dir.resolve()):
        raise pack_error(
            located, f"entry point {declared!r} is outside the pack directory", ("entry_point",)
        )
    if not path.is_file():
        raise pack_error(
            located,
            f"entry point {declared!r} not found: {path} is not a file "
            "(entry_point is relative to the actions/ folder)",
            ("entry_point",),
        )
    return str(path)
