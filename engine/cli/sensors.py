"""`hookyard sensor list` and `hookyard trigger list`: sensors (with the state the
sensors role reports) and trigger types on a running server."""

from __future__ import annotations

import click

from engine.cli.client import ApiClient, server_command
from engine.cli.output import show_list


@click.group("sensor")
def sensor_group() -> None:
    """Pack sensors on a running server."""


@sensor_group.command("list")
@click.option("--pack", help="Only this pack's sensors.")
@server_command
def sensor_list(client: ApiClient, as_json: bool, pack: str | None) -> None:
    """List sensors: status (running, crashed, backoff, other process...), restarts and
    the last error (its traceback with --json)."""
    columns = (
        ("ref", "ref"),
        ("enabled", "enabled"),
        ("status", "status"),
        ("restarts", "restarts"),
        ("dispatched", "dispatched"),
        ("last error", "last_error"),
    )
    show_list(client.get("/sensortypes", {"pack": pack}), as_json, columns, "sensors")


@click.group("trigger")
def trigger_group() -> None:
    """Trigger types registered by packs on a running server."""


@trigger_group.command("list")
@click.option("--pack", help="Only this pack's trigger types.")
@server_command
def trigger_list(client: ApiClient, as_json: bool, pack: str | None) -> None:
    """List trigger types."""
    columns = (("ref", "ref"), ("description", "description"))
    show_list(client.get("/triggertypes", {"pack": pack}), as_json, columns, "trigger types")
