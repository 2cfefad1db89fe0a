"""Load packs in StackStorm's layout from one or more directories.

``<dir>/<pack>/pack.yaml``, ``actions/*.yaml`` (entry points beside them), ``rules/*.yaml``,
``webhooks/*.yaml``, ``triggers/*.yaml``, ``sensors/*.yaml``, ``policies/*.yaml`` and
``config.schema.yaml``.
Every problem is reported with its file and line, and never stops the rest: a broken
action file loses that action, a broken ``pack.yaml`` loses that pack. Earlier directories
win: a pack ref seen again later is an error naming both places, never a silent override.

The built-in ``core`` pack (``core.local``, ``core.http``, ...) is package data beside this
module and is always loaded first, as StackStorm always has its core pack: a ``core`` pack
in the directories is an error naming both folders, unless ``override_core`` lets it
replace the built-in one whole.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from engine.errors import EngineError, PackError
from engine.packs.action import ACTION_CHAIN, Action, RunnerCatalog, build_action
from engine.packs.config import read_config_schema, resolve_config
from engine.packs.metadata import (
    METADATA_SUFFIXES,
    metadata_files,
    pack_error,
    read_metadata,
    require_mapping,
    type_name,
)
from engine.packs.pack import Pack, PackSet, WebhookSpec, read_pack_metadata
from engine.packs.parameters import ActionParameter
from engine.packs.policies import check_policies, load_policies
from engine.packs.sensors import load_sensors
from engine.packs.triggers import load_trigger_types
from engine.rules import load_rules
from engine.rules.rule import Rule, normalize_webhook_name
from engine.rules.yamlsource import Located

PACK_FILE = "pack.yaml"
CONFIG_SCHEMA_FILE = "config.schema.yaml"
CORE_REF = "core"
# Shipped in the wheel ([tool.setuptools.package-data] in pyproject.toml).
BUILTIN_CORE_DIR = Path(__file__).resolve().parent / "builtin" / CORE_REF


def load_packs(
    dirs: Sequence[str | os.PathLike[str]],
    *,
    runners: RunnerCatalog,
    configs_dir: str | os.PathLike[str] | None = None,
    override_core: bool = False,
) -> tuple[PackSet, list[EngineError]]:
    """The built-in core pack, then every pack under ``dirs`` (each a folder of packs, or
    one pack folder itself).

    ``runners`` is the runner registry the actions are checked against (e.g.
    ``engine.runners.default_runners()``: the pack core does not know the runners);
    ``configs_dir`` holds ``<ref>.yaml``
    pack configs; ``override_core`` lets a ``core`` pack in ``dirs`` replace the built-in
    one. Returns the packs that loaded and every error found.
    """
    errors: list[EngineError] = []
    packs: dict[str, Pack] = {}
    hooks: dict[str, WebhookSpec] = {}
    builtin_core = _load_pack(BUILTIN_CORE_DIR, runners, configs_dir, errors)
    if builtin_core is not None:
        packs[CORE_REF] = _without_taken_hooks(builtin_core, hooks, errors)
    for pack in _packs_in(dirs, runners, configs_dir, errors):
        if pack.ref == CORE_REF and builtin_core is not None:
            if not override_core:
                errors.append(_shadowed_core_error(pack, builtin_core))
                continue
            # The directory's core replaces the built-in one whole, first place kept.
            for name in packs[CORE_REF].webhooks:
                hooks.pop(name, None)
            builtin_core = None
            packs[CORE_REF] = _without_taken_hooks(pack, hooks, errors)
            continue
        first = packs.get(pack.ref)
        if first is not None:
            errors.append(
                PackError(
                    f"pack {pack.ref!r} is already loaded from {first.path}; pack refs "
                    "must be unique across pack directories (this one is ignored)",
                    file=str(Path(pack.path) / PACK_FILE),
                )
            )
            continue
        packs[pack.ref] = _without_taken_hooks(pack, hooks, errors)
    _check_policies(packs, errors)
    return PackSet(packs=packs, errors=tuple(errors)), errors


def _check_policies(packs: dict[str, Pack], errors: list[EngineError]) -> None:
    # A policy names an action of any pack: checked once every pack is in.
    found = PackSet(packs=dict(packs))
    dropped = check_policies(found.policies(), found.find_action, errors)
    if not dropped:
        return
    for ref, pack in list(packs.items()):
        kept = {name: p for name, p in pack.policies.items() if id(p) not in dropped}
        if len(kept) != len(pack.policies):
            packs[ref] = dataclasses.replace(pack, policies=kept)


def _packs_in(
    dirs: Sequence[str | os.PathLike[str]],
    runners: RunnerCatalog,
    configs_dir: str | os.PathLike[str] | None,
    errors: list[EngineError],
) -> Iterator[Pack]:
    for directory in dirs:
        root = Path(directory)
        if (root / PACK_FILE).is_file():
            pack_dirs = [root]
        elif root.is_dir():
            pack_dirs = sorted(
                p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
            )
        else:
            errors.append(PackError("no such packs directory", file=str(root)))
            continue
        for pack_dir in pack_dirs:
            pack = _load_pack(pack_dir, runners, configs_dir, errors)
            if pack is not None:
                yield pack


def _shadowed_core_error(pack: Pack, builtin: Pack) -> PackError:
    return PackError(
        f"pack 'core' would shadow the built-in core pack ({builtin.path}); this one is "
        "ignored. Rename its ref, or set packs.override_core: true in the config "
        "(HOOKYARD_PACKS__OVERRIDE_CORE=true) to use it instead of the built-in one",
        file=str(Path(pack.path) / PACK_FILE),
    )


def _without_taken_hooks(
    pack: Pack, hooks: dict[str, WebhookSpec], errors: list[EngineError]
) -> Pack:
    # A hook name is one URL (/webhooks/<name>) for the whole engine: first pack wins.
    kept: dict[str, WebhookSpec] = {}
    for name, spec in pack.webhooks.items():
        first = hooks.get(name)
        if first is not None:
            errors.append(
                PackError(
                    f"webhook {name!r} is already defined in pack {first.pack!r} at "
                    f"{first.source}:{first.line or 1}; webhook names must be unique",
                    file=spec.source,
                    line=spec.line,
                )
            )
            continue
        hooks[name] = kept[name] = spec
    if len(kept) == len(pack.webhooks):
        return pack
    return dataclasses.replace(pack, webhooks=kept)


def _load_pack(
    pack_dir: Path,
    runners: RunnerCatalog,
    configs_dir: str | os.PathLike[str] | None,
    errors: list[EngineError],
) -> Pack | None:
    meta_file = pack_dir / PACK_FILE
    if not meta_file.is_file():
        errors.append(PackError(f"not a pack: it has no {PACK_FILE}", file=str(pack_dir)))
        return None
    try:
        ref, metadata = read_pack_metadata(read_metadata(meta_file))
    except PackError as exc:
        errors.append(exc)
        return None
    files = [PACK_FILE]
    actions = _load_actions(pack_dir, ref, runners, files, errors)
    rules = _load_rules(pack_dir, ref, files, errors)
    webhooks = _load_webhooks(pack_dir, ref, files, errors)
    config = _load_config(pack_dir, ref, configs_dir, files, errors)
    trigger_types = load_trigger_types(pack_dir, ref, files, errors)
    sensors = load_sensors(pack_dir, ref, files, trigger_types, errors)
    policies = load_policies(pack_dir, ref, files, errors)
    return Pack(
        ref=ref,
        name=metadata["name"],
        path=str(pack_dir.absolute()),
        metadata=metadata,
        actions=actions,
        rules=tuple(rules),
        webhooks=webhooks,
        config_schema=config.raw_schema,
        config_items=config.items,
        config=config.values,
        config_file=config.file,
        config_error=config.error,
        files=tuple(files),
        trigger_types=trigger_types,
        sensors=sensors,
        policies=policies,
    )


def _load_actions(
    pack_dir: Path, ref: str, runners: RunnerCatalog, files: list[str], errors: list[EngineError]
) -> dict[str, Action]:
    actions: dict[str, Action] = {}
    for file in metadata_files(pack_dir / "actions"):
        files.append(_relative(file, pack_dir))
        try:
            located = read_metadata(file)
            action = build_action(located, pack_ref=ref, pack_dir=pack_dir, runners=runners)
        except PackError as exc:
            errors.append(exc)
            continue
        first = actions.get(action.name)
        if first is not None:
            errors.append(
                PackError(
                    f"action {action.ref!r} is already defined at {first.source}:{first.line or 1};"
                    " action names must be unique in a pack",
                    file=action.source,
                    line=action.line,
                )
            )
            continue
        actions[action.name] = action
        if action.broken is not None:
            # Kept loaded: running it fails with this, not with "unknown action".
            errors.append(
                PackError(
                    f"action {action.ref!r} cannot run: its {_definition(action)} has problems:\n"
                    f"{action.broken}",
                    file=action.source,
                    line=action.line,
                )
            )
        if action.entry_point:
            files.append(_relative(Path(action.entry_point), pack_dir))
    return actions


def _load_rules(
    pack_dir: Path, ref: str, files: list[str], errors: list[EngineError]
) -> list[Rule]:
    rules_dir = pack_dir / "rules"
    if not rules_dir.is_dir():
        return []
    files.extend(
        _relative(p, pack_dir)
        for p in sorted(rules_dir.rglob("*"))
        if p.suffix in METADATA_SUFFIXES and p.is_file()
    )
    ruleset, rule_errors = load_rules(rules_dir, pack=ref)
    errors.extend(rule_errors)
    rules = []
    for rule in ruleset:
        if rule.pack != ref:
            errors.append(
                PackError(
                    f"rule says pack {rule.pack!r} but lives in pack {ref!r}; "
                    "remove 'pack' or make it match",
                    file=rule.source,
                    line=rule.line,
                )
            )
            continue
        rules.append(rule)
    return rules


def _load_webhooks(
    pack_dir: Path, ref: str, files: list[str], errors: list[EngineError]
) -> dict[str, WebhookSpec]:
    webhooks: dict[str, WebhookSpec] = {}
    for file in metadata_files(pack_dir / "webhooks"):
        files.append(_relative(file, pack_dir))
        try:
            spec = _read_webhook(read_metadata(file), ref, default_name=file.stem)
        except PackError as exc:
            errors.append(exc)
            continue
        first = webhooks.get(spec.name)
        if first is not None:
            errors.append(
                PackError(
                    f"webhook {spec.name!r} is already defined at {first.source}:{first.line or 1}",
                    file=spec.source,
                    line=spec.line,
                )
            )
            continue
        webhooks[spec.name] = spec
    return webhooks


def _read_webhook(located: Located, pack_ref: str, *, default_name: str) -> WebhookSpec:
    # An empty file declares the hook with default settings.
    data = {} if located.data is None else require_mapping(located, "a webhook file")
    name = data.get("name", default_name)
    if not isinstance(name, str):
        raise pack_error(located, f"'name' must be a string, got {type_name(name)}", ("name",))
    hook = normalize_webhook_name(name)
    if not hook:
        raise pack_error(located, "'name' must name a hook: /webhooks/<name>", ("name",))
    line, _ = located.position(())
    settings = {k: v for k, v in data.items() if k != "name"}
    return WebhookSpec(name=hook, pack=pack_ref, settings=settings, source=located.file, line=line)


@dataclasses.dataclass(frozen=True)
class _LoadedConfig:
    raw_schema: dict[str, Any]  # config.schema.yaml as written
    items: dict[str, ActionParameter]
    values: dict[str, Any]
    file: str | None  # <configs_dir>/<ref>.yaml when it exists
    error: str | None  # why the schema or the values did not load


def _load_config(
    pack_dir: Path,
    ref: str,
    configs_dir: str | os.PathLike[str] | None,
    files: list[str],
    errors: list[EngineError],
) -> _LoadedConfig:
    schema_file = pack_dir / CONFIG_SCHEMA_FILE
    raw_schema: dict[str, Any] = {}
    schema: dict[str, ActionParameter] = {}
    error: str | None = None
    if schema_file.is_file():
        files.append(CONFIG_SCHEMA_FILE)
        try:
            located = read_metadata(schema_file)
            schema = read_config_schema(located)
            raw_schema = dict(located.data or {})
        except PackError as exc:
            errors.append(exc)
            error = str(exc)
    config_file = Path(configs_dir) / f"{ref}.yaml" if configs_dir is not None else None
    found = config_file if config_file is not None and config_file.is_file() else None
    try:
        located_config = read_metadata(found) if found is not None else None
        config = resolve_config(located_config, schema, ref)
    except PackError as exc:
        errors.append(exc)
        error = error or str(exc)
        config = {}
    return _LoadedConfig(
        raw_schema, schema, config, str(found.absolute()) if found else None, error
    )


def _relative(path: Path, pack_dir: Path) -> str:
    return Path(os.path.relpath(path, pack_dir)).as_posix()


def _definition(action: Action) -> str:
    return "chain" if action.runner_type == ACTION_CHAIN else "workflow"
