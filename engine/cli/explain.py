"""`hookyard explain TRIGGER_INSTANCE_ID [--rule REF]`: why rules did or did not fire."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from engine.cli.client import ApiClient, server_command
from engine.cli.output import print_json, short


@click.command("explain")
@click.argument("trigger_instance_id")
@click.option("--rule", "rule_ref", help="Explain only this rule (pack.name).")
@server_command
def explain_command(
    trigger_instance_id: str, rule_ref: str | None, *, client: ApiClient, as_json: bool
) -> None:
    """Which rules were candidates for a trigger instance, which matched, and for each one
    that did not, the first criterion that failed and why; what execution followed."""
    reply = client.get(
        f"/triggerinstances/{quote(trigger_instance_id, safe='')}/explain", {"rule": rule_ref}
    )
    if as_json:
        print_json(reply.data)
    else:
        for line in explain_lines(reply.data):
            click.echo(line)


def explain_lines(report: dict[str, Any]) -> list[str]:
    """The report as lines for a terminal."""
    instance = report["trigger_instance"]
    source = instance["trigger"]
    if instance.get("webhook"):
        source += f" (webhook {instance['webhook']!r})"
    lines = [
        f"trigger instance {instance['id']}: {source}, {instance['status']}",
        f"{len(report['candidates'])} candidate rule(s), matched: "
        + (", ".join(report["matched"]) or "none"),
    ]
    for candidate in report["candidates"]:
        lines.append("")
        lines.extend(_candidate_lines(candidate))
    if report.get("hint"):
        lines.extend(("", f"hint: {report['hint']}"))
    return lines


def _candidate_lines(candidate: dict[str, Any]) -> list[str]:
    rule = candidate["rule"]
    if candidate["matched"]:
        lines = [f"MATCHED      {rule}"]
    else:
        lines = [f"NOT MATCHED  {rule}"]
        failed = candidate.get("failed_criterion")
        if failed is not None:
            lines.append(
                f"  failed criterion: {failed['key']} {failed['operator']} "
                f"{short(failed['pattern'])}"
            )
            lines.append(f"  value found: {short(failed['value'])}")
            if failed.get("reason"):
                lines.append(f"  why: {failed['reason']}")
        elif candidate.get("reason"):
            lines.append(f"  why: {candidate['reason']}")
    enforcement = candidate.get("enforcement")
    if enforcement is not None:
        text = f"  enforcement {enforcement['id']}: {enforcement['status']}"
        if enforcement.get("failure_reason"):
            text += f" ({enforcement['failure_reason']})"
        lines.append(text)
    execution = candidate.get("execution")
    if execution is not None:
        lines.append(f"  execution {execution['id']}: {execution['action']} {execution['status']}")
        for task in execution.get("tasks") or ():
            lines.append(
                f"    task {task['task']}: {task['action']} {task['status']} ({task['id']})"
            )
    return lines
