"""`hookyard trigger-instance list|get|re-emit`: accepted events on a running server."""

from __future__ import annotations

import sys
from typing import Any

import click

from engine.cli.client import ApiClient, ApiError, ServerUnreachable, path_part, server_command
from engine.cli.output import fail, limit_option, print_json, show_list, show_object


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


@trigger_instance_group.command("re-emit")
@click.argument("instance_ids", nargs=-1)
@click.option("--all-failed", is_flag=True, help="Every trigger instance whose processing failed.")
@click.option(
    "--since",
    metavar="TIMESTAMP",
    help="With --all-failed or alone: only instances that occurred after this ISO time.",
)
@server_command
def trigger_instance_re_emit(
    client: ApiClient,
    as_json: bool,
    instance_ids: tuple[str, ...],
    all_failed: bool,
    since: str | None,
) -> None:
    """Store copies of trigger instances as new events, so rules evaluate them again.

    Give ids, or select them with --all-failed and/or --since. A progress bar shows when
    more than one is re-emitted; ids that fail are reported and the rest continue.
    """
    ids = list(instance_ids)
    if all_failed or since:
        if ids:
            fail("give trigger instance ids or --all-failed/--since, not both")
        ids = _selected(client, all_failed, since)
        if not ids:
            click.echo("no trigger instance matches", err=True)
            return
    if not ids:
        fail("give trigger instance ids, or --all-failed / --since")
    results, failures = _re_emit_all(client, ids)
    if as_json:
        print_json(results[0] if len(ids) == 1 and results else results)
    elif len(ids) == 1 and results:
        click.echo(results[0].get("message") or f"re-emitted as {results[0].get('id')}")
    else:
        for result in results:
            click.echo(f"{result.get('original')} -> {result.get('id')}")
        click.echo(f"re-emitted {len(results)} of {len(ids)} trigger instance(s)")
    for line in failures:
        click.echo(f"error: {line}", err=True)
    if failures:
        sys.exit(1)


def _selected(client: ApiClient, all_failed: bool, since: str | None) -> list[str]:
    # Ids are collected first: the copies are new instances and would shift the pages.
    query = {
        "status": "processing_failed" if all_failed else None,
        "timestamp_gt": since,
        "limit": -1,
    }
    instances = client.get("/triggerinstances", query).data or []
    return [item["id"] for item in reversed(instances)]  # oldest first, as they happened


def _re_emit_all(client: ApiClient, ids: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    with click.progressbar(
        ids, label="re-emitting", file=sys.stderr, hidden=len(ids) < 2, show_pos=True
    ) as bar:
        for instance_id in bar:
            try:
                reply = client.post(f"/triggerinstances/{path_part(instance_id)}/re_emit", None)
            except ServerUnreachable:
                raise
            except ApiError as exc:
                failures.append(f"{instance_id}: {exc}")
                continue
            results.append(reply.data if isinstance(reply.data, dict) else {})
    return results, failures
