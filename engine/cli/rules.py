"""`hookyard rule`: validate and test rule files here; list, get, enable, disable and
delete the rules of a running server.

Rules created through the API can be changed on the server; a rule from a file is changed
by editing its file (the server answers 409 naming it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
import yaml

from engine.cli.client import API_KEY_VARIABLE, ApiClient, ClientError, path_part, server_command
from engine.cli.output import (
    fail,
    field,
    limit_option,
    print_json,
    print_table,
    short,
    show_list,
    show_object,
)
from engine.cli.pack_check import split_paths
from engine.cli.pack_check import validate as check_paths
from engine.config import load_settings
from engine.errors import EngineError, RuleError, YamlLimitError
from engine.model.names import MAX_REF_CHARS, too_long
from engine.rules import load_rule, render_parameters
from engine.support import safeyaml

EXIT_MATCHED, EXIT_NOT_MATCHED, EXIT_ERROR = 0, 1, 2


@click.group("rule")
def rule_group() -> None:
    """Rules: validate and test files locally; list, get, enable, disable, delete on a server."""


@rule_group.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="HOOKYARD_CONFIG",
    help="Config file whose packs_dirs hold the known actions (default: ./config.yaml).",
)
@click.option(
    "--packs", "packs_dirs", multiple=True, type=click.Path(), help="Packs folder (repeatable)."
)
def validate(paths: tuple[str, ...], config_file: str | None, packs_dirs: tuple[str, ...]) -> None:
    """Check rule files or directories, and pack folders; print every error as
    file:line:col: message.

    A pack folder (holding pack.yaml) is checked as the server loads it: its rules as rules,
    its actions, workflows, sensors and trigger types as what they are. Rules that load but
    reference an unknown action or trigger type, or whose criteria can never all match, are
    printed as warnings; warnings alone exit 0.
    """
    rule_paths, pack_dirs = split_paths(paths)
    known_dirs = [Path(d) for d in packs_dirs]
    override_core = False
    try:
        settings = load_settings(config_file)
    except EngineError as exc:
        if not known_dirs:
            click.echo(f"warning: packs not checked: {exc}", err=True)
    else:
        override_core = settings.packs.override_core
        if not known_dirs:
            known_dirs = [Path(settings.resolve_path(d)) for d in settings.packs_dirs]
    report = check_paths(rule_paths, pack_dirs, known_dirs, override_core)
    for line in [*report.errors, *report.warnings]:
        click.echo(line, err=True)
    packs = f" and {len(report.packs)} pack(s)" if report.packs else ""
    if report.errors:
        click.echo(f"{len(report.errors)} error(s) in {report.files} file(s){packs}", err=True)
        raise SystemExit(1)
    suffix = f", {len(report.warnings)} warning(s)" if report.warnings else ""
    click.echo(f"ok: {report.rules} rule(s) in {report.files} file(s){packs}{suffix}")


@rule_group.command("test")
@click.argument("rule", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--payload",
    "payload_file",
    type=click.Path(dir_okay=False),
    help="JSON or YAML file holding the trigger payload.",
)
@click.option(
    "--trigger-instance",
    "instance_id",
    help="Use the payload of this stored trigger instance (from the server at --url).",
)
@click.option(
    "--url",
    envvar="HOOKYARD_URL",
    default="http://127.0.0.1:8080",
    show_default=True,
    help="Server holding --trigger-instance (also HOOKYARD_URL; key from HOOKYARD_API_KEY).",
)
@click.option(
    "--trigger", "trigger_type", help="Trigger type of the payload (default: the rule's)."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def test(
    rule: str,
    payload_file: str | None,
    instance_id: str | None,
    url: str,
    trigger_type: str | None,
    as_json: bool,
) -> None:
    """Evaluate RULE against a payload without firing anything.

    The payload comes from a file (--payload) or a stored trigger instance
    (--trigger-instance). Exit 0 if it matched, 1 if not, 2 on an error.
    """
    if (payload_file is None) == (instance_id is None):
        fail("give exactly one of --payload FILE or --trigger-instance ID", EXIT_ERROR)
    try:
        loaded = load_rule(Path(rule))
    except RuleError as exc:
        fail(str(exc), EXIT_ERROR)
    if instance_id is not None:
        payload, stored_trigger = _fetch_instance(url, instance_id)
        trigger_type = trigger_type or stored_trigger
    else:
        payload = _read_payload(payload_file)
    report = evaluate_for_report(loaded, payload, trigger_type)
    if as_json:
        print_json(report)
    else:
        _print_report(report)
    raise SystemExit(EXIT_MATCHED if report["matched"] else EXIT_NOT_MATCHED)


# --- on a running server ------------------------------------------------------------


@rule_group.command("list")
@click.option("--pack", help="Only rules of this pack.")
@click.option("--action", help="Only rules running this action ref.")
@click.option(
    "--enabled/--disabled", "enabled", default=None, help="Only enabled (or disabled) rules."
)
@limit_option
@server_command
def rule_list(
    client: ApiClient,
    as_json: bool,
    pack: str | None,
    action: str | None,
    enabled: bool | None,
    limit: int,
) -> None:
    """List the rules a running server has loaded."""
    query = {
        "pack": pack,
        "action": action,
        "enabled": None if enabled is None else str(enabled),
        "limit": limit,
    }
    reply = client.get("/rules", query)
    if not as_json:
        for rule in reply.data or []:
            url = field(rule, "trigger.parameters.url")
            rule["trigger_shown"] = (field(rule, "trigger.type") or "") + (
                f" ({url})" if url else ""
            )
    columns = (
        ("ref", "ref"),
        ("enabled", "enabled"),
        ("trigger", "trigger_shown"),
        ("action", "action.ref"),
        ("description", "description"),
    )
    show_list(reply, as_json, columns, "rules")


@rule_group.command("get")
@click.argument("ref")
@server_command
def rule_get(client: ApiClient, as_json: bool, ref: str) -> None:
    """Show a loaded rule: trigger, criteria and action."""
    data = client.get(f"/rules/{path_part(ref)}").data
    show_object(data, as_json, ("ref", "pack", "name", "description", "enabled", "trigger"))


def _set_enabled(client: ApiClient, as_json: bool, ref: str, enabled: bool) -> None:
    data = client.put(f"/rules/{path_part(ref)}", {"enabled": enabled}).data
    if as_json:
        print_json(data)
    else:
        click.echo(f"rule {data.get('ref', ref)} {'enabled' if enabled else 'disabled'}")


@rule_group.command("enable")
@click.argument("ref")
@server_command
def rule_enable(client: ApiClient, as_json: bool, ref: str) -> None:
    """Enable a rule created through the API."""
    _set_enabled(client, as_json, ref, True)


@rule_group.command("disable")
@click.argument("ref")
@server_command
def rule_disable(client: ApiClient, as_json: bool, ref: str) -> None:
    """Disable a rule created through the API (it stays stored)."""
    _set_enabled(client, as_json, ref, False)


@rule_group.command("delete")
@click.argument("ref")
@server_command
def rule_delete(client: ApiClient, as_json: bool, ref: str) -> None:
    """Delete a rule created through the API, by REF (pack.name) or by its id.

    The id is in `hookyard rule get REF --json`; a stored rule that no longer loads
    (e.g. a name over the length limit) is named by its id in the server's log.
    """
    if len(ref) > MAX_REF_CHARS:
        fail(
            f"the rule ref {too_long(len(ref), MAX_REF_CHARS)}; no such rule can be named by "
            "its ref: give the rule's id (24 hex digits, shown in the server log)"
        )
    client.delete(f"/rules/{path_part(ref)}")
    if as_json:
        print_json({"ref": ref, "deleted": True})
    else:
        click.echo(f"rule {ref} deleted")


# --- the rule tester --------------------------------------------------------------------


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


def _fetch_instance(url: str, instance_id: str) -> tuple[Any, str]:
    """The payload and trigger type of a stored trigger instance, read from the server."""
    client = ApiClient(url, os.environ.get(API_KEY_VARIABLE))
    try:
        data = client.get(f"/triggerinstances/{path_part(instance_id)}").data
    except ClientError as exc:
        fail(str(exc), EXIT_ERROR)
    trigger = data.get("trigger")
    if isinstance(trigger, dict):
        trigger = trigger.get("ref") or trigger.get("type")
    # A timer instance carries its trigger ref (type:digest); the rule names the type.
    return data.get("payload"), str(trigger or "").partition(":")[0]


def _read_payload(file: str) -> Any:
    try:
        text = Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"{file}: cannot read payload: {exc.strerror}", EXIT_ERROR)
    try:
        return json.loads(text)
    except json.JSONDecodeError as json_error:
        try:
            return safeyaml.safe_load(text, file=file)
        except YamlLimitError as exc:
            fail(str(exc), EXIT_ERROR)
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
