"""`hookyard inquiry list|get|respond`: inquiries (`core.ask`) waiting on a server.

The same calls `st2 inquiry` makes: `GET /api/v1/inquiries`, `GET /api/v1/inquiries/<id>`,
`PUT /api/v1/inquiries/<id>` with `{"id": ..., "response": {...}}`.
"""

from __future__ import annotations

import json

import click

from engine.cli.client import ApiClient, path_part, server_command
from engine.cli.output import fail, limit_option, print_json, show_list, show_object

INQUIRY_COLUMNS = (
    ("id", "id"),
    ("roles", "roles"),
    ("users", "users"),
    ("route", "route"),
    ("ttl", "ttl"),
)
INQUIRY_ORDER = ("id", "roles", "users", "route", "ttl", "schema")


@click.group("inquiry")
def inquiry_group() -> None:
    """Inquiries (core.ask) waiting for a response on a running server."""


@inquiry_group.command("list")
@limit_option
@server_command
def inquiry_list(client: ApiClient, as_json: bool, limit: int) -> None:
    """List the inquiries waiting for a response, newest first."""
    show_list(client.get("/inquiries", {"limit": limit}), as_json, INQUIRY_COLUMNS, "inquiries")


@inquiry_group.command("get")
@click.argument("inquiry_id")
@server_command
def inquiry_get(client: ApiClient, as_json: bool, inquiry_id: str) -> None:
    """Show one inquiry: who may answer it and the schema its response must fit."""
    show_object(client.get(f"/inquiries/{path_part(inquiry_id)}").data, as_json, INQUIRY_ORDER)


@inquiry_group.command("respond")
@click.argument("inquiry_id")
@click.option(
    "-r",
    "--response",
    "response_text",
    required=True,
    help="The response as a JSON object, e.g. '{\"continue\": true}'.",
)
@server_command
def inquiry_respond(client: ApiClient, as_json: bool, inquiry_id: str, response_text: str) -> None:
    """Answer an inquiry; the workflow waiting on it goes on."""
    try:
        response = json.loads(response_text)
    except ValueError as exc:
        fail(f"--response is not JSON: {exc}")
    if not isinstance(response, dict):
        fail("--response must be a JSON object, e.g. '{\"continue\": true}'")
    reply = client.put(
        f"/inquiries/{path_part(inquiry_id)}", {"id": inquiry_id, "response": response}
    )
    if as_json:
        print_json(reply.data)
    else:
        click.echo(f"Response accepted for inquiry {inquiry_id}.")
