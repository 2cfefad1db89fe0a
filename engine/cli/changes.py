"""Client commands that change things on a running server: `hookyard rule
enable|disable|delete`, `hookyard execution cancel`, `hookyard trigger-instance re-emit`.

Rules created through the API can be changed here; a rule from a file is changed by
editing its file (the server answers 409 naming it).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from engine.cli.client import ApiClient, ApiError, ServerUnreachable, server_command
from engine.cli.output import fail, print_json
from engine.cli.resources import path_part
from engine.model.names import MAX_REF_CHARS, too_long

# --- rules -------------------------------------------------------------------------------


def _set_enabled(client: ApiClient, as_json: bool, ref: str, enabled: bool) -> None:
    data = client.put(f"/rules/{path_part(ref)}", {"enabled": enabled}).data
    if as_json:
        print_json(data)
    else:
        click.echo(f"rule {data.get('ref', ref)} {'enabled' if enabled else 'disabled'}")


@click.command("enable")
@click.argument("ref")
@server_command
def rule_enable(client: ApiClient, as_json: bool, ref: str) -> None:
    """Enable a rule created through the API."""
    _set_enabled(client, as_json, ref, True)


@click.command("disable")
@click.argument("ref")
@server_command
def rule_disable(client: ApiClient, as_json: bool, ref: str) -> None:
    """Disable a rule created through the API (it stays stored)."""
    _set_enabled(client, as_json, ref, False)


@click.command("delete")
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


# --- executions --------------------------------------------------------------------------


@click.command("cancel")
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


# --- trigger instances -------------------------------------------------------------------


@click.command("re-emit")
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
