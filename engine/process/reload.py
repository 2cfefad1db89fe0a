"""Reload rules, packs and webhook definitions in a running process, file by file.

A reload loads everything again; a file that fails to load keeps its previous good
version (its rules, its action, its pack, its hook) and the error is reported, so one
broken edit never takes a working rule down. The new rule set, pack set and webhook
definitions are swapped in with plain assignments between two awaits: requests and
workers in flight finish with the set they started with, and nothing is dropped.

Triggered by SIGHUP, `POST /api/v1/reload` and `hookyard serve --watch` (`watch_files`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import EngineError
from engine.packs import PackSet
from engine.packs.config import config_satisfies
from engine.packs.pack import Pack
from engine.process.runtime import Runtime
from engine.rules import RuleSet
from engine.rules.rule import Rule

log = logging.getLogger(__name__)

# File suffixes a change to which triggers a --watch reload.
WATCHED_SUFFIXES = (".yaml", ".yml", ".py", ".sh", ".json")


@dataclass
class ReloadReport:
    rules: int = 0
    packs: int = 0
    actions: int = 0
    webhooks: int = 0
    errors: list[str] = field(default_factory=list)
    # Files that failed to load and whose previous version stays in service.
    kept_previous: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def reload_runtime(runtime: Runtime, gate: Any = None) -> ReloadReport:
    """Load rules and packs again, keeping the previous version of every broken file.

    `gate` (the app's auth Gatekeeper, when there is one) gets its webhook definitions
    rebuilt from the config file and the packs; if they do not build, it keeps its own.
    """
    previous_rules, previous_packs = runtime.ruleset, runtime.packs
    runtime.load_rules()
    errors: list[EngineError] = list(runtime.load_errors)
    # Rules whose trigger parameters do not fit (a timer that is no schedule included)
    # are load errors already (engine.rules.trigger_parameters).
    ruleset_rules = list(runtime.ruleset)
    broken = {_norm(f) for f in (getattr(e, "file", None) for e in errors) if f}
    packs, kept_packs, kept_configs = _merge_packs(previous_packs, runtime.packs, broken)
    rules, kept_rules = _merge_rules(previous_rules, ruleset_rules, broken, kept_packs)
    ruleset, duplicates = RuleSet.build(rules)
    errors.extend(duplicates)
    report = ReloadReport(
        rules=len(ruleset),
        packs=len(packs.packs),
        actions=len(packs.actions()),
        errors=[str(e) for e in errors],
        kept_previous=sorted({*kept_rules, *(p.path for p in kept_packs), *kept_configs}),
    )
    if gate is not None:
        problem = gate.reload_definitions(runtime.settings, packs)
        if problem:
            report.errors.append(problem)
        report.webhooks = len(gate.definitions)
    # The swap: two assignments with no await between them.
    runtime.packs, runtime.ruleset = packs, ruleset
    runtime.load_errors = errors
    for path in report.kept_previous:
        log.warning("reload: %s did not load; its previous version stays in service", path)
    log.info(
        "reloaded %d rule(s), %d pack(s), %d action(s); %d error(s)",
        report.rules,
        report.packs,
        report.actions,
        len(report.errors),
    )
    runtime.observe("reloaded", len(report.errors))
    return report


def _norm(path: str) -> str:
    return os.path.abspath(path)


def _merge_rules(
    previous: RuleSet, loaded: list[Rule], broken: set[str], kept_packs: list[Pack]
) -> tuple[list[Rule], list[str]]:
    loaded_refs = {r.ref for r in loaded}
    loaded_sources = {_norm(r.source) for r in loaded if r.source}
    rules = list(loaded)
    kept_files = []
    for rule in previous:
        source = _norm(rule.source) if rule.source else None
        if source in broken and source not in loaded_sources and rule.ref not in loaded_refs:
            rules.append(rule)
            loaded_refs.add(rule.ref)
            kept_files.append(source)
    for pack in kept_packs:
        for rule in pack.rules:
            if rule.ref not in loaded_refs:
                rules.append(rule)
                loaded_refs.add(rule.ref)
    return rules, kept_files


def _merge_packs(
    previous: PackSet, loaded: PackSet, broken: set[str]
) -> tuple[PackSet, list, list[str]]:
    """(the packs in service, packs kept whole, config and policy files whose previous
    version stays)."""
    packs = dict(loaded.packs)
    kept_whole: list[Pack] = []
    kept_configs: list[str] = []
    for ref, old in previous.packs.items():
        new = packs.get(ref)
        if new is None:
            if _norm(os.path.join(old.path, "pack.yaml")) in broken:
                packs[ref] = old
                kept_whole.append(old)
            continue
        actions = dict(new.actions)
        for name, action in old.actions.items():
            if name not in actions and action.source and _norm(action.source) in broken:
                actions[name] = action
        hooks = dict(new.webhooks)
        for name, spec in old.webhooks.items():
            if name not in hooks and spec.source and _norm(spec.source) in broken:
                hooks[name] = spec
        policies = dict(new.policies)
        for name, policy in old.policies.items():
            if name not in policies and policy.source and _norm(policy.source) in broken:
                policies[name] = policy  # a broken policy file: the policy that worked stays
                kept_configs.append(policy.source)
        changes: dict[str, Any] = {}
        if len(actions) != len(new.actions) or len(hooks) != len(new.webhooks):
            changes.update(actions=actions, webhooks=hooks)
        if len(policies) != len(new.policies):
            changes.update(policies=policies)
        schema_file = os.path.join(new.path, "config.schema.yaml")
        broken_config = [
            path
            for path in (new.config_file, schema_file)
            if path is not None and _norm(path) in broken
        ]
        keep = broken_config and new.config_error is not None and old.config_error is None
        if keep and _norm(schema_file) not in broken:
            # The schema loaded: the old values stay only if they meet it. A schema that
            # now requires what the config never had fails the pack's actions instead.
            keep = config_satisfies(old.config, new.config_items)
        if keep:
            # The config file (or its schema) broke: the config that worked stays.
            changes.update(
                config=old.config,
                config_items=old.config_items,
                config_schema=old.config_schema,
                config_error=None,
            )
            kept_configs.extend(broken_config)
        if changes:
            packs[ref] = dataclasses.replace(new, **changes)
    return PackSet(packs=packs, errors=loaded.errors), kept_whole, kept_configs


# --- watching files ----------------------------------------------------------------------


def watched_roots(runtime: Runtime) -> list[Path]:
    settings = runtime.settings
    folders = (*settings.rules_dirs, *settings.packs_dirs, settings.configs_dir)
    roots = [settings.resolve_path(d) for d in folders]
    if settings.config_file:
        roots.append(Path(settings.config_file))
    return roots


def snapshot(roots: Iterable[Path]) -> dict[str, tuple[float, int]]:
    """Path → (mtime, size) of every watched file under `roots`."""
    found: dict[str, tuple[float, int]] = {}
    for path in _files(roots):
        try:
            stat = path.stat()
        except OSError:
            continue  # removed while walking
        found[str(path)] = (stat.st_mtime, stat.st_size)
    return found


def _files(roots: Iterable[Path]) -> Iterator[Path]:
    for root in roots:
        if root.is_file():
            yield root
        elif root.is_dir():
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if not d.startswith((".", "__"))]
                for name in filenames:
                    if name.endswith(WATCHED_SUFFIXES) and not name.startswith("."):
                        yield Path(dirpath) / name


async def watch_files(
    runtime: Runtime, stop: asyncio.Event, gate: Any = None, interval: float = 0.5
) -> None:
    """Reload whenever a watched file's mtime or size changes (polled; no dependency)."""
    roots = watched_roots(runtime)
    seen = await asyncio.to_thread(snapshot, roots)
    log.info("watching %d file(s) under %s for changes", len(seen), ", ".join(map(str, roots)))
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval)
            return
        except TimeoutError:
            pass
        current = await asyncio.to_thread(snapshot, roots)
        if current != seen:
            changed = sorted(set(current.items()) ^ set(seen.items()))
            log.info("files changed (%s); reloading", ", ".join(sorted({p for p, _ in changed})))
            seen = current
            try:
                reload_runtime(runtime, gate)
            except Exception:  # a reload bug must not stop watching
                log.exception("reload failed; the previous rules stay in service")
