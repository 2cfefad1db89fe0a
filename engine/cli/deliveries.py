"""`hookyard delivery list|get|redeliver`: outbound webhook deliveries on a running server."""

from __future__ import annotations

import click

from engine.cli.client import ApiClient, path_part, server_command
from engine.cli.output import limit_option, print_json, show_list, show_object

DELIVERY_COLUMNS = (
    ("id", "id"),
    ("subscription", "subscriptionId"),
    ("event", "eventType"),
    ("seq", "sequence"),
    ("status", "status"),
    ("attempts", "attempts"),
    ("last", "lastStatusCode"),
    ("error", "lastError"),
    ("next attempt", "next_attempt_at"),
)
STATUSES = ("pending", "delivering", "succeeded", "failed")


@click.group("delivery")
def delivery_group() -> None:
    """Outbound webhook deliveries (events sent to subscriptions) on a running server."""


@delivery_group.command("list")
@click.option("--subscription", help="Only deliveries to this subscription id.")
@click.option("--status", type=click.Choice(STATUSES), help="Only deliveries in this state.")
@click.option("--event-type", help="Only deliveries of this event type (rule.enforced...).")
@limit_option
@server_command
def delivery_list(
    client: ApiClient,
    as_json: bool,
    subscription: str | None,
    status: str | None,
    event_type: str | None,
    limit: int,
) -> None:
    """Deliveries, newest first, with their attempts and last error."""
    query = {
        "subscription": subscription,
        "status": status,
        "event_type": event_type,
        "limit": limit,
    }
    reply = client.get("/deliveries", query)
    for item in reply.data or []:
        # The table shows times with the column helpers' *_at convention.
        item["next_attempt_at"] = item.get("nextAttemptAt")
    show_list(reply, as_json, DELIVERY_COLUMNS, "deliveries")


@delivery_group.command("get")
@click.argument("delivery_id")
@server_command
def delivery_get(client: ApiClient, as_json: bool, delivery_id: str) -> None:
    """One delivery with every attempt."""
    data = client.get(f"/deliveries/{path_part(delivery_id)}").data
    show_object(data, as_json, ("id", "subscriptionId", "eventType", "status", "attempts"))


@delivery_group.command("redeliver")
@click.argument("delivery_id")
@server_command
def delivery_redeliver(client: ApiClient, as_json: bool, delivery_id: str) -> None:
    """Send a delivery's event again (a new delivery, next in sequence)."""
    data = client.post(f"/deliveries/{path_part(delivery_id)}/redeliver", None).data
    if as_json:
        print_json(data)
    else:
        click.echo(f"redelivery {data['id']} queued (sequence {data['sequence']})")
