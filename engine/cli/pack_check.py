"""What `hookyard rule validate` checks: rule files, and pack folders as the server loads
them.

A pack folder (one holding `pack.yaml`, or a folder of such) is not a folder of rules: its
`rules/` are rules, its `actions/` actions (their Orquesta workflows inspected as
`hookyard workflow inspect` does, action chains read), its `sensors/` and `triggers/`
what they are. What StackStorm runs but Hookyard does not (remote and WinRM runners), and a
config the pack needs but the folder does not hold (configs live in `configs/`), are
warnings: the pack is valid StackStorm content.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import (
    EngineError,
    PackNotConfiguredError,
    RuleLoadError,
    UnsupportedRunnerError,
)
from engine.packs import PackSet, load_packs
from engine.packs.loader import PACK_FILE
from engine.rules import Rule, RuleSet, load_rules
from engine.rules.lint import lint_rules
from engine.rules.loader import iter_rule_files
from engine.rules.parameter_kinds import kinds_for_runner, shell_command_parameters
from engine.rules.trigger_parameters import unfit_trigger_parameters
from engine.runners import default_runners
from engine.workflows.inspect import inspect_workflow

ORQUESTA = "orquesta"


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rules: int = 0
    files: int = 0
    packs: list[str] = field(default_factory=list)


def split_paths(paths: Iterable[str]) -> tuple[list[str], list[Path]]:
    """(rule files and folders, pack folders) among the paths given."""
    rule_paths: list[str] = []
    pack_dirs: list[Path] = []
    for text in paths:
        path = Path(text)
        if (path / PACK_FILE).is_file():
            pack_dirs.append(path)
        elif path.is_dir() and not _holds_yaml(path) and (inner := _packs_inside(path)):
            pack_dirs.extend(inner)
        else:
            rule_paths.append(text)
    return rule_paths, pack_dirs


def validate(
    rule_paths: list[str], pack_dirs: list[Path], known_pack_dirs: list[Path], override_core: bool
) -> Report:
    """Every error and warning of the rule files and pack folders; `known_pack_dirs` (the
    config's packs) supply actions and trigger types the rules may name."""
    report = Report()
    load_errors: list[RuleLoadError] = []
    files = iter_rule_files(rule_paths, load_errors)
    file_rules, rule_errors = load_rules(*files)
    load_errors.extend(rule_errors)
    report.errors.extend(str(error) for error in load_errors)
    report.files = len(files)

    checked_dirs = {d.resolve() for d in pack_dirs}
    known = [
        d for d in _pack_folders(known_pack_dirs) if d.resolve() not in checked_dirs
    ]  # a pack validated is not loaded twice when the config's packs hold it too
    packs, pack_errors = load_packs(
        [*pack_dirs, *known],
        runners=default_runners(),
        override_core=override_core,
    )
    checked = [p for p in packs.packs.values() if _inside(Path(p.path), pack_dirs)]
    report.packs = sorted(p.ref for p in checked)
    report.files += sum(len(p.files) for p in checked)
    pack_rules = [rule for pack in checked for rule in pack.rules]
    _classify_pack_errors(report, pack_errors, packs, pack_dirs)
    _inspect_workflows(report, packs, report.packs)

    fitting, trigger_errors = unfit_trigger_parameters(
        [*file_rules, *pack_rules], packs.trigger_parameter_schemas()
    )
    report.errors.extend(str(error) for error in trigger_errors)
    ruleset, duplicates = RuleSet.build(fitting)
    report.errors.extend(str(error) for error in duplicates)
    report.rules = len(ruleset)
    report.warnings.extend(_lint(list(ruleset), packs))
    return report


def _classify_pack_errors(
    report: Report, errors: list[EngineError], packs: PackSet, pack_dirs: list[Path]
) -> None:
    inspected = {
        action.source
        for action in packs.actions()
        if action.runner_type == ORQUESTA and action.broken is not None
    }
    for error in errors:
        file = getattr(error, "file", None)
        if file is not None and not _inside(Path(file), pack_dirs):
            continue  # a problem of the config's packs, not of what is validated
        if isinstance(error, UnsupportedRunnerError | PackNotConfiguredError):
            report.warnings.append(f"{error} (warning)")
        elif file in inspected:
            continue  # its workflow's own problems are listed one by one below
        else:
            report.errors.append(str(error))


def _inspect_workflows(report: Report, packs: PackSet, refs: list[str]) -> None:
    for ref in refs:
        for action in sorted(packs.packs[ref].actions.values(), key=lambda a: a.ref):
            if action.runner_type != ORQUESTA or not action.entry_point:
                continue
            try:
                text = Path(action.entry_point).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                report.errors.append(f"{action.entry_point}: cannot read the workflow: {exc}")
                continue
            problems = inspect_workflow(text, action.entry_point)
            report.errors.extend(str(problem) for problem in problems)


def _lint(rules: list[Rule], packs: PackSet) -> list[str]:
    shell = {
        action.ref: shell_command_parameters(kinds_for_runner(action.runner_type))
        for action in packs.actions()
    }
    warnings = lint_rules(
        rules,
        known_actions={action.ref for action in packs.actions()},
        known_packs={*packs.packs, "core"},
        shell_parameters=lambda ref: shell.get(ref, frozenset()),
        known_trigger_types={t.ref for t in packs.trigger_types()},
    )
    return [str(warning) for warning in warnings]


def _inside(path: Path, folders: list[Path]) -> bool:
    resolved = path.resolve()
    return any(resolved.is_relative_to(folder.resolve()) for folder in folders)


def _pack_folders(dirs: list[Path]) -> list[Path]:
    """Each pack folder of `dirs` (a pack itself, or a folder of packs)."""
    found: list[Path] = []
    for folder in dirs:
        if (folder / PACK_FILE).is_file():
            found.append(folder)
        elif folder.is_dir():
            found.extend(
                p
                for p in sorted(folder.iterdir())
                if p.is_dir() and not p.name.startswith((".", "_"))
            )
    return found


def _holds_yaml(folder: Path) -> bool:
    return any(p.suffix in (".yaml", ".yml") for p in folder.iterdir() if p.is_file())


def _packs_inside(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and (p / PACK_FILE).is_file())


__all__ = ["Report", "split_paths", "validate"]
