"""The webhooks the loaded rules listen on, under /api/v1/webhooks: list and get.

Receiving a webhook (POST) is engine.http.webhooks.
"""

from __future__ import annotations

from aiohttp import web

from engine.errors import NotFound
from engine.http import shapes
from engine.http.context import RUNTIME, json_response
from engine.http.paging import add_get_both_slashes


def add_routes(app: web.Application) -> None:
    add_get_both_slashes(app, "/api/v1/webhooks", list_webhooks)
    add_get_both_slashes(app, "/api/v1/webhooks/{name:.+}", get_webhook)


async def list_webhooks(request: web.Request) -> web.Response:
    hooks = request.app[RUNTIME].ruleset.webhooks
    return json_response([shapes.webhook(name, rules) for name, rules in sorted(hooks.items())])


async def get_webhook(request: web.Request) -> web.Response:
    name = request.match_info["name"].strip("/")
    rules = request.app[RUNTIME].ruleset.webhooks.get(name)
    if not rules:
        raise NotFound(f"no webhook {name!r}")
    return json_response(shapes.webhook(name, rules))
