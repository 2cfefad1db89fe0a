"""`hookyard enforcement list`: rule enforcements (a rule matched an event) on a server."""

from __future__ import annotations

import click

from engine.cli.client import ApiClient, server_command
from engine.cli.output import limit_option, show_list


@click.group("enforcement")
def enforcement_group() -> None:
    """Rule enforcements (a rule matched an event) on a running server."""


@enforcement_group.command("list")
@click.option("--trigger-instance", help="Only enforcements of this trigger instance.")
@click.option("--rule", help="Only enforcements of this rule ref.")
@click.option("--execution", help="Only the enforcement that requested this execution.")
@limit_option
@server_command
def enforcement_list(
    client: ApiClient,
    as_json: bool,
    trigger_instance: str | None,
    rule: str | None,
    execution: str | None,
    limit: int,
) -> None:
    """List rule enforcements, newest first."""
    query = {
        "trigger_instance": trigger_instance,
        "rule_ref": rule,
        "execution": execution,
        "limit": limit,
    }
    columns = (
        ("id", "id"),
        ("rule", "rule.ref"),
        ("trigger instance", "trigger_instance_id"),
        ("execution", "execution_id"),
        ("status", "status"),
        ("enforced", "enforced_at"),
    )
    show_list(client.get("/ruleenforcements", query), as_json, columns, "enforcements")
