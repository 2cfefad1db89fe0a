"""`hookyard rule validate` and `hookyard rule test`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import yaml

from engine.cli.output import fail, print_json, print_table, short
from engine.errors import RuleError, RuleLoadError
from engine.rules import load_rule, load_rules, render_parameters
from engine.rules.loader import iter_rule_files

EXIT_MATCHED, EXIT_NOT_MATCHED, EXIT_ERROR = 0, 1, 2


@click.group("rule")
def rule_group() -> None:
    """Validate and test rule files."""


@rule_group.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
def validate(paths: tuple[str, ...]) -> None:
    """Check rule files or directories; print every error as file:line:col: message."""
    errors: list[RuleLoadError] = []
    files = iter_rule_files(paths, errors)
    ruleset, load_errors = load_rules(*[f for f in files])
    errors.extend(load_errors)
    for error in errors:
        click.echo(str(error), err=True)
    if errors:
        click.echo(f"{len(errors)} error(s) in {len(files)} file(s)", err=True)
        raise SystemExit(1)
    click.echo(f"ok: {len(ruleset)} rule(s) in {len(files)} file(s)")


@rule_group.command("test")
@click.argument("rule", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--payload",
    "payload_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="JSON or YAML file holding the trigger payload.",
)
@click.option(
    "--trigger", "trigger_type", help="Trigger type of the payload (default: the rule's)."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def test(rule: str, payload_file: str, trigger_type: str | None, as_json: bool) -> None:
    """Evaluate RULE against a payload without firing anything.

    Exit 0 if it matched, 1 if not, 2 on an error.
    """
    try:
        loaded = load_rule(Path(rule))
    except RuleError as exc:
        fail(str(exc), EXIT_ERROR)
    payload = _read_payload(payload_file)
    report = evaluate_for_report(loaded, payload, trigger_type)
    if as_json:
        print_json(report)
    else:
        _print_report(report)
    raise SystemExit(EXIT_MATCHED if report["matched"] else EXIT_NOT_MATCHED)


def evaluate_for_report(rule, payload: Any, trigger_type: str | None) -> dict[str, Any]:
    """The rule tester's answer as plain data (shared by the CLI and the API)."""
    report: dict[str, Any] = {"rule": rule.ref, "trigger": rule.trigger_type}
    if trigger_type and trigger_type != rule.trigger_type:
        report.update(
            matched=False,
            reason=f"the rule listens to {rule.trigger_type}, not {trigger_type}",
            trace=[],
        )
        return report
    evaluation = rule.evaluate(payload)
    report.update(matched=evaluation.matched, trace=evaluation.trace_dicts())
    if evaluation.reason:
        report["reason"] = evaluation.reason
    if evaluation.matched:
        report["action"] = rule.action_ref
        try:
            report["parameters"] = render_parameters(rule, payload)
        except RuleError as exc:
            report["matched"] = False
            report["reason"] = f"action parameters did not render: {exc}"
    return report


def _read_payload(file: str) -> Any:
    try:
        text = Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"{file}: cannot read payload: {exc.strerror}", EXIT_ERROR)
    try:
        return json.loads(text)
    except json.JSONDecodeError as json_error:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            fail(
                f"{file}:{json_error.lineno}:{json_error.colno}: payload is neither JSON nor "
                f"YAML: {json_error.msg}",
                EXIT_ERROR,
            )


def _print_report(report: dict[str, Any]) -> None:
    verdict = "MATCHED" if report["matched"] else "NOT MATCHED"
    click.echo(f"rule {report['rule']} (trigger {report['trigger']}): {verdict}")
    if report.get("reason"):
        click.echo(f"  reason: {report['reason']}")
    if report["trace"]:
        click.echo("")
        rows = [
            (
                "pass" if item["passed"] else "FAIL",
                item["key"],
                item["operator"],
                short(item["pattern"]),
                short(item["value"]),
                item["reason"] or "",
            )
            for item in report["trace"]
        ]
        print_table(("result", "criterion", "operator", "pattern", "value", "reason"), rows)
    if "parameters" in report:
        click.echo("")
        click.echo(f"action {report['action']} with parameters:")
        rows = [
            (name, type(value).__name__, short(value, 60))
            for name, value in report["parameters"].items()
        ]
        print_table(("parameter", "type", "value"), rows)
