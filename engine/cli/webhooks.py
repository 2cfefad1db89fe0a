"""`hookyard webhook list`: the webhooks a running server's rules listen on."""

from __future__ import annotations

import click

from engine.cli.client import ApiClient, server_command
from engine.cli.output import show_list


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
