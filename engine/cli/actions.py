"""`hookyard action list|get` and `hookyard pack list|get`: what a running server loaded.

Like `st2 action list|get` and `st2 pack list|get`: the actions with their runner, and
one action's parameters as a run sees them — the runner's parameters overlaid with the
action's (engine.cli.run.parameter_schemas), so `hookyard run` arguments can be read off.
"""

from __future__ import annotations

from typing import Any

import click

from engine.cli.client import ApiClient, path_part, server_command
from engine.cli.output import cell, print_json, print_table, show_object
from engine.cli.run import parameter_schemas

ACTION_ORDER = ("ref", "pack", "name", "runner_type", "description", "entry_point", "enabled")
PACK_ORDER = ("ref", "name", "version", "description", "author", "path")


@click.group("action")
def action_group() -> None:
    """Actions the server loaded from its packs."""


@action_group.command("list")
@click.option("--pack", help="Only this pack's actions.")
@server_command
def action_list(client: ApiClient, as_json: bool, pack: str | None) -> None:
    """List actions: ref, runner and description."""
    actions = client.get("/actions", {"pack": pack}).data or []
    if as_json:
        print_json(actions)
    elif not actions:
        click.echo(f"no actions in pack {pack!r}" if pack else "no actions")
    else:
        rows = [(a["ref"], a["runner_type"], cell(a.get("description"))) for a in actions]
        print_table(("ref", "runner", "description"), sorted(rows))


@action_group.command("get")
@click.argument("ref")
@server_command
def action_get(client: ApiClient, as_json: bool, ref: str) -> None:
    """Show an action and every parameter a run takes (the runner's included)."""
    action = client.get(f"/actions/{path_part(ref)}").data
    if as_json:
        print_json(action)
        return
    show_object({k: action.get(k) for k in ACTION_ORDER}, False, ACTION_ORDER)
    schemas = parameter_schemas(client, ref)
    own = set(action.get("parameters") or {})
    if not schemas:
        click.echo("parameters: none")
        return
    click.echo("parameters:")
    print_table(
        ("name", "type", "required", "default", "from", "description"),
        [_parameter_row(name, schemas[name], name in own) for name in sorted(schemas)],
    )


def _parameter_row(name: str, schema: dict[str, Any], own: bool) -> tuple[str, ...]:
    kind = schema.get("type")
    return (
        name,
        "/".join(kind) if isinstance(kind, list) else str(kind or "any"),
        "yes" if schema.get("required") else "",
        "" if "default" not in schema else cell(schema["default"]),
        "action" if own else "runner",
        cell(schema.get("description")),
    )


@click.group("pack")
def pack_group() -> None:
    """Packs the server loaded."""


@pack_group.command("list")
@server_command
def pack_list(client: ApiClient, as_json: bool) -> None:
    """List packs with their version and how many actions each has."""
    packs = client.get("/packs").data or []
    if as_json:
        print_json(packs)
        return
    counts: dict[str, int] = {}
    for action in client.get("/actions").data or []:
        counts[action["pack"]] = counts.get(action["pack"], 0) + 1
    print_table(
        ("ref", "version", "actions", "description"),
        [
            (p["ref"], p.get("version", ""), counts.get(p["ref"], 0), cell(p.get("description")))
            for p in packs
        ],
    )


@pack_group.command("get")
@click.argument("ref")
@server_command
def pack_get(client: ApiClient, as_json: bool, ref: str) -> None:
    """Show a pack's metadata and its actions."""
    pack = client.get(f"/packs/{path_part(ref)}").data
    if as_json:
        print_json(pack)
        return
    show_object({k: pack.get(k) for k in PACK_ORDER}, False, PACK_ORDER)
    actions = client.get("/actions", {"pack": ref}).data or []
    click.echo("actions: " + (", ".join(sorted(a["name"] for a in actions)) or "none"))
