"""Read commands for a running server: executions, trigger instances, enforcements,
webhooks and rules (`list`, `get`, and `trigger-instance re-emit`).

Lists are newest first, as the server returns them; `--json` prints the server's JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import click
import yaml

from engine.cli.client import ApiClient, Reply, server_command
from engine.cli.output import print_json, print_table, short

DEFAULT_LIMIT = 50


def limit_option(function):
    return click.option(
        "-n",
        "--limit",
        type=click.IntRange(min=1),
        default=DEFAULT_LIMIT,
        show_default=True,
        help="How many to show, newest first.",
    )(function)


def field(item: Any, dotted: str) -> Any:
    """`item["a"]["b"]` for "a.b", None where a step is missing."""
    value = item
    for key in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def when(timestamp: str | None) -> str:
    """An ISO-8601 UTC timestamp as `YYYY-MM-DD HH:MM:SS` for a table."""
    if not timestamp:
        return ""
    return timestamp.replace("T", " ")[:19]


def cell(value: Any) -> str:
    return "" if value is None else short(value)


def show_list(
    reply: Reply,
    as_json: bool,
    columns: Sequence[tuple[str, str]],
    what: str,
) -> None:
    """A table of `columns` (header, dotted field; fields ending in _at/_time/timestamp are
    times) or the JSON, and a note on stderr when the server holds more than shown."""
    items = reply.data or []
    if as_json:
        print_json(items)
    elif not items:
        click.echo(f"no {what}")
    else:
        rows = [[_render(item, path) for _, path in columns] for item in items]
        print_table([header for header, _ in columns], rows)
    if reply.total is not None and reply.total > len(items):
        click.echo(f"showing {len(items)} of {reply.total} {what}; use -n to see more", err=True)


def _render(item: Any, path: str) -> str:
    value = field(item, path)
    if path.endswith(("_at", "_time", "timestamp")):
        return when(value)
    return cell(value)


class _ReadableDumper(yaml.SafeDumper):
    """YAML for people: command output with several lines shows as a `|` block."""


def _represent_text(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_ReadableDumper.add_representer(str, _represent_text)


def show_object(data: dict[str, Any], as_json: bool, order: Sequence[str] = ()) -> None:
    """`key: value` lines, `order` first; objects and lists as indented JSON."""
    if as_json:
        print_json(data)
        return
    keys = [k for k in order if k in data] + sorted(k for k in data if k not in order)
    width = max((len(k) for k in keys), default=0)
    for key in keys:
        value = data[key]
        if isinstance(value, dict | list) and value:
            text = yaml.dump(value, Dumper=_ReadableDumper, allow_unicode=True)
            click.echo(f"{key}:")
            click.echo("\n".join("  " + line for line in text.splitlines()))
        else:
            shown = "" if value is None else value if isinstance(value, str) else json.dumps(value)
            click.echo(f"{key + ':':<{width + 1}} {shown}".rstrip())


def path_part(value: str) -> str:
    """One URL path segment: an id or ref with `/` or `?` cannot reach another route."""
    return quote(value, safe="")


# --- executions --------------------------------------------------------------

EXECUTION_COLUMNS = (
    ("id", "id"),
    ("action", "action.ref"),
    ("status", "status"),
    ("rule", "rule.ref"),
    ("trigger instance", "trigger_instance"),
    ("requested", "start_timestamp"),
    ("finished", "end_timestamp"),
)
EXECUTION_ORDER = (
    "id",
    "status",
    "action",
    "parameters",
    "context",
    "rule",
    "trigger_instance",
    "attempt",
    "start_timestamp",
    "started_at",
    "end_timestamp",
    "result",
    "log",
)


def execution_for_display(execution: dict[str, Any]) -> dict[str, Any]:
    """The execution with its action reduced to the ref (the full action is in --json)."""
    shown = dict(execution)
    shown["action"] = field(execution, "action.ref")
    if isinstance(shown.get("rule"), dict):
        shown["rule"] = shown["rule"].get("ref")
    return shown


@click.group("execution")
def execution_group() -> None:
    """Executions on a running server."""


@execution_group.command("list")
@click.option("--action", help="Only this action ref, e.g. core.local.")
@click.option("--status", help="Only this status: requested, running, succeeded, failed...")
@click.option("--trigger-instance", help="Only executions this trigger instance caused.")
@click.option("--rule", help="Only executions this rule enforced.")
@limit_option
@server_command
def execution_list(
    client: ApiClient,
    as_json: bool,
    action: str | None,
    status: str | None,
    trigger_instance: str | None,
    rule: str | None,
    limit: int,
) -> None:
    """List executions, newest first."""
    query = {
        "action": action,
        "status": status,
        "trigger_instance": trigger_instance,
        "rule": rule,
        "limit": limit,
    }
    show_list(client.get("/executions", query), as_json, EXECUTION_COLUMNS, "executions")


@execution_group.command("get")
@click.argument("execution_id")
@server_command
def execution_get(client: ApiClient, as_json: bool, execution_id: str) -> None:
    """Show one execution: parameters, status, timestamps, result and status log."""
    data = client.get(f"/executions/{path_part(execution_id)}").data
    show_object(data if as_json else execution_for_display(data), as_json, EXECUTION_ORDER)
    if not as_json and data.get("children"):
        tree = client.get(f"/executions/{path_part(execution_id)}/children", {"depth": -1})
        print_table(("task", "status", "action", "seconds", "id"), task_rows(data["id"], tree.data))


def task_rows(root: str, children: list[dict[str, Any]]) -> list[list[Any]]:
    """A workflow's task runs as a tree: subworkflows' tasks indented under them."""
    below: dict[str, list[dict[str, Any]]] = {}
    for child in children:
        below.setdefault(child.get("parent") or "", []).append(child)
    rows: list[list[Any]] = []

    def walk(parent: str, depth: int) -> None:
        for child in below.get(parent, []):
            task = (child.get("context") or {}).get("orquesta", {}).get("task_name", "")
            rows.append(
                [
                    "  " * depth + str(task),
                    child.get("status"),
                    field(child, "action.ref"),
                    _seconds(child.get("started_at"), child.get("end_timestamp")),
                    child.get("id"),
                ]
            )
            if depth < 32:
                walk(child["id"], depth + 1)

    walk(root, 0)
    return rows


def _seconds(started: str | None, ended: str | None) -> str:
    if not started or not ended:
        return ""
    try:
        elapsed = datetime.fromisoformat(ended) - datetime.fromisoformat(started)
    except ValueError:
        return ""
    return f"{elapsed.total_seconds():.1f}"


# --- trigger instances -------------------------------------------------------


@click.group("trigger-instance")
def trigger_instance_group() -> None:
    """Trigger instances (accepted events) on a running server."""


@trigger_instance_group.command("list")
@click.option("--trigger", help="Only this trigger type, e.g. core.st2.webhook.")
@click.option("--webhook", help="Only events posted to this webhook name.")
@click.option("--status", help="Only this status: pending, processed...")
@limit_option
@server_command
def trigger_instance_list(
    client: ApiClient,
    as_json: bool,
    trigger: str | None,
    webhook: str | None,
    status: str | None,
    limit: int,
) -> None:
    """List trigger instances, newest first."""
    query = {"trigger": trigger, "webhook": webhook, "status": status, "limit": limit}
    columns = (
        ("id", "id"),
        ("trigger", "trigger"),
        ("webhook", "webhook"),
        ("status", "status"),
        ("occurred", "occurrence_time"),
    )
    show_list(client.get("/triggerinstances", query), as_json, columns, "trigger instances")


@trigger_instance_group.command("get")
@click.argument("instance_id")
@server_command
def trigger_instance_get(client: ApiClient, as_json: bool, instance_id: str) -> None:
    """Show one trigger instance with its payload."""
    data = client.get(f"/triggerinstances/{path_part(instance_id)}").data
    show_object(data, as_json, ("id", "trigger", "webhook", "status", "occurrence_time"))


# `hookyard trigger-instance re-emit` (many ids, filters, a progress bar) is in
# engine.cli.changes with the other commands that change things on the server.


# --- enforcements ------------------------------------------------------------


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


# --- webhooks ----------------------------------------------------------------


@click.group("webhook")
def webhook_group() -> None:
    """Webhooks the loaded rules listen on."""


@webhook_group.command("list")
@server_command
def webhook_list(client: ApiClient, as_json: bool) -> None:
    """List webhook names, their URL and the rules listening on each."""
    reply = client.get("/webhooks")
    if not as_json:
        for hook in reply.data or []:
            hook["rules"] = ", ".join(hook.get("rules") or [])
    columns = (("name", "name"), ("url", "url"), ("rules", "rules"), ("description", "description"))
    show_list(reply, as_json, columns, "webhooks")


# --- rules (added to the local `hookyard rule` group) --------------------------


@click.command("list")
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


@click.command("get")
@click.argument("ref")
@server_command
def rule_get(client: ApiClient, as_json: bool, ref: str) -> None:
    """Show a loaded rule: trigger, criteria and action."""
    data = client.get(f"/rules/{path_part(ref)}").data
    show_object(data, as_json, ("ref", "pack", "name", "description", "enabled", "trigger"))
