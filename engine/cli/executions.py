"""`hookyard execution list|get|cancel`: executions on a running server.

`hookyard run` (engine.cli.run) requests one and shows it the way `get` does.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

import click

from engine.cli.client import ApiClient, path_part, server_command
from engine.cli.output import (
    field,
    limit_option,
    print_json,
    print_table,
    show_list,
    show_object,
)

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
    """The execution with its action reduced to the ref (the full action is in --json),
    and its status with the time it took, as `st2 execution get` shows it."""
    shown = dict(execution)
    shown["action"] = field(execution, "action.ref")
    elapsed = _elapsed(execution.get("start_timestamp"), execution.get("end_timestamp"))
    if elapsed is not None and shown.get("status"):
        shown["status"] = f"{shown['status']} ({elapsed}s elapsed)"
    if isinstance(shown.get("rule"), dict):
        shown["rule"] = shown["rule"].get("ref")
    return shown


def _elapsed(started: str | None, ended: str | None) -> int | None:
    """Whole seconds from start to end (to now while it runs); None without a start."""
    if not started:
        return None
    try:
        begin = datetime.fromisoformat(started.replace("Z", "+00:00"))
        end = datetime.fromisoformat(ended.replace("Z", "+00:00")) if ended else None
    except ValueError:
        return None
    end = end or datetime.now(begin.tzinfo)
    return max(0, int((end - begin).total_seconds()))


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
    """A workflow's task runs (a chain's links) as a tree: subworkflows' tasks indented
    under them."""
    below: dict[str, list[dict[str, Any]]] = {}
    for child in children:
        below.setdefault(child.get("parent") or "", []).append(child)
    rows: list[list[Any]] = []

    def walk(parent: str, depth: int) -> None:
        for child in below.get(parent, []):
            rows.append(
                [
                    "  " * depth + _task_name(child),
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


def _task_name(child: dict[str, Any]) -> str:
    context = child.get("context") or {}
    if isinstance(context.get("chain"), dict):
        return str(context["chain"].get("name", ""))
    return str((context.get("orquesta") or {}).get("task_name", ""))


def _seconds(started: str | None, ended: str | None) -> str:
    if not started or not ended:
        return ""
    try:
        elapsed = datetime.fromisoformat(ended) - datetime.fromisoformat(started)
    except ValueError:
        return ""
    return f"{elapsed.total_seconds():.1f}"


@execution_group.command("cancel")
@click.argument("execution_ids", nargs=-1, required=True)
@server_command
def execution_cancel(client: ApiClient, as_json: bool, execution_ids: tuple[str, ...]) -> None:
    """Cancel executions: queued ones end at once, running ones are killed.

    A running execution shows `canceling` until its worker has stopped it.
    """
    answers = []
    refused = []
    for execution_id in execution_ids:
        data = client.delete(f"/executions/{path_part(execution_id)}").data or {}
        answers.append(data)
        if data.get("faultstring"):
            refused.append(f"{execution_id}: {data['faultstring']}")
        elif not as_json:
            click.echo(f"execution {execution_id}: {data.get('status')}")
    if as_json:
        print_json(answers if len(answers) > 1 else answers[0])
    for line in refused:
        click.echo(f"error: {line}", err=True)
    if refused:
        sys.exit(1)
