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
    help="The response as a JSON object, e.g. '{\"continue\": true}'; without it, each "
    "property of the inquiry's schema is asked for.",
)
@server_command
def inquiry_respond(
    client: ApiClient, as_json: bool, inquiry_id: str, response_text: str | None
) -> None:
    """Answer an inquiry; the workflow waiting on it goes on."""
    path = f"/inquiries/{path_part(inquiry_id)}"
    if response_text is None:
        response = _prompted(client.get(path).data.get("schema") or {})
    else:
        try:
            response = json.loads(response_text)
        except ValueError as exc:
            fail(f"--response is not JSON: {exc}")
        if not isinstance(response, dict):
            fail("--response must be a JSON object, e.g. '{\"continue\": true}'")
    reply = client.put(path, {"id": inquiry_id, "response": response})
    if as_json:
        print_json(reply.data)
    else:
        click.echo(f"Response accepted for inquiry {inquiry_id}.")


# How a property of each JSON type is read from the terminal (others: as JSON text).
_PROMPT_TYPES = {"boolean": click.BOOL, "integer": click.INT, "number": click.FLOAT}


def _prompted(schema: dict) -> dict:
    """The response, asked property by property as `st2 inquiry respond` does; an
    optional property left empty is left out. The server checks it against the schema."""
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    response = {}
    for name, prop in properties.items():
        prop = prop if isinstance(prop, dict) else {}
        must = prop.get("required") is True or name in required
        label = f"{prop.get('description') or name} ({name})"
        text = click.prompt(label, default=None if must else "", show_default=False)
        if text == "" and not must:
            continue
        response[name] = _value(name, prop.get("type"), text)
    return response


def _value(name: str, kind: object, text: str) -> object:
    if kind == "string":
        return text
    if isinstance(kind, str) and kind in _PROMPT_TYPES:
        try:
            return _PROMPT_TYPES[kind].convert(text, None, None)
        except click.BadParameter as exc:
            fail(f"{name}: {exc.message}")
    try:
        return json.loads(text)
    except ValueError:
        return text
