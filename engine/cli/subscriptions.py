"""`hookyard subscription list|get|close-circuit`: outbound subscriptions on a running
server, with their circuit breaker state (engine.outbound.breaker)."""

from __future__ import annotations

import click

from engine.cli.client import ApiClient, path_part, server_command
from engine.cli.output import show_list, show_object

SUBSCRIPTION_COLUMNS = (
    ("id", "id"),
    ("url", "url"),
    ("enabled", "enabled"),
    ("circuit", "circuit.state"),
    ("failures in a row", "circuit.consecutiveFailures"),
    ("open until", "circuit.open_until"),
    ("rate/s", "rateLimit"),
)


@click.group("subscription")
def subscription_group() -> None:
    """Outbound webhook subscriptions (where engine events are sent) on a running server."""


@subscription_group.command("list")
@server_command
def subscription_list(client: ApiClient, as_json: bool) -> None:
    """Subscriptions with their circuit state and rate limit."""
    reply = client.get("/events/webhooks")
    for item in reply.data or []:
        circuit = item.get("circuit") or {}
        circuit["open_until"] = circuit.get("openUntil")  # shown as a time by the table
    show_list(reply, as_json, SUBSCRIPTION_COLUMNS, "subscriptions")


@subscription_group.command("get")
@click.argument("subscription_id")
@server_command
def subscription_get(client: ApiClient, as_json: bool, subscription_id: str) -> None:
    """One subscription, its circuit included."""
    show_object(client.get(f"/events/webhooks/{path_part(subscription_id)}").data, as_json)


@subscription_group.command("close-circuit")
@click.argument("subscription_id")
@server_command
def close_circuit(client: ApiClient, as_json: bool, subscription_id: str) -> None:
    """Close a tripped circuit now: its waiting deliveries go without waiting for a probe."""
    path = f"/events/webhooks/{path_part(subscription_id)}"
    updated = client.patch(path, {"circuit": "closed"}).data
    if as_json:
        show_object(updated, True)
    else:
        click.echo(f"{updated['id']} circuit {updated['circuit']['state']}")
