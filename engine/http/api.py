"""Read API under /api/v1 in StackStorm's shapes (paths with or without a trailing slash).

Lists are newest first with `limit`/`offset` (limit=-1: all) and the total count in
X-Total-Count, which the st2 CLI reads.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from engine.errors import IngestError, NotFound
from engine.http import shapes
from engine.http.context import RUNTIME, Handler, json_response
from engine.http.guard import guarded
from engine.model.records import Page
from engine.rules.stored import loaded_rule

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
ALL = 1_000_000_000

TRIGGER_INSTANCE_FILTERS = ("trigger", "status", "webhook", "timestamp_gt", "timestamp_lt")
ENFORCEMENT_FILTERS = (
    "trigger_instance",
    "rule_ref",
    "execution",
    "enforced_at_gt",
    "enforced_at_lt",
)
EXECUTION_FILTERS = (
    "action",
    "status",
    "trigger_instance",
    "rule",
    "parent",
    "timestamp_gt",
    "timestamp_lt",
)


def add_routes(app: web.Application) -> None:
    get = _both_slashes(app)
    get("/api/v1/triggerinstances", list_trigger_instances)
    get("/api/v1/triggerinstances/{id}", get_trigger_instance)
    get("/api/v1/ruleenforcements", list_enforcements)
    get("/api/v1/rules", list_rules)
    get("/api/v1/rules/{ref}", get_rule)
    get("/api/v1/webhooks", list_webhooks)
    get("/api/v1/webhooks/{name:.+}", get_webhook)


def _both_slashes(app: web.Application):
    def add(path: str, handler: Handler) -> None:
        app.router.add_get(path, guarded(handler))
        app.router.add_get(path + "/", guarded(handler))

    return add


def paging(query: Mapping[str, str]) -> tuple[int, int]:
    try:
        limit = int(query.get("limit", DEFAULT_LIMIT))
        offset = int(query.get("offset", 0))
    except ValueError:
        raise IngestError("limit and offset must be integers") from None
    if limit == -1:
        limit = ALL
    if limit < 1 or offset < 0:
        raise IngestError("limit must be positive (or -1 for all) and offset not negative")
    return limit, offset


def filters(query: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    return {name: query[name] for name in names if query.get(name) not in (None, "")}


def page_response(page: Page, shape) -> web.Response:
    return json_response(
        [shape(item) for item in page.items], headers={"X-Total-Count": str(page.total)}
    )


async def list_trigger_instances(request: web.Request) -> web.Response:
    limit, offset = paging(request.query)
    page = await request.app[RUNTIME].store.list_trigger_instances(
        filters(request.query, TRIGGER_INSTANCE_FILTERS), limit, offset
    )
    return page_response(page, shapes.trigger_instance)


async def get_trigger_instance(request: web.Request) -> web.Response:
    instance = await request.app[RUNTIME].store.get_trigger_instance(request.match_info["id"])
    return json_response(shapes.trigger_instance(instance))


async def list_enforcements(request: web.Request) -> web.Response:
    limit, offset = paging(request.query)
    page = await request.app[RUNTIME].store.list_enforcements(
        filters(request.query, ENFORCEMENT_FILTERS), limit, offset
    )
    return page_response(page, shapes.enforcement)


async def list_rules(request: web.Request) -> web.Response:
    rules = [rule.to_api() for rule in request.app[RUNTIME].ruleset]
    query = request.query
    if query.get("pack"):
        rules = [r for r in rules if r["pack"] == query["pack"]]
    if query.get("enabled") is not None:
        wanted = query["enabled"].lower() in ("true", "1")
        rules = [r for r in rules if r["enabled"] == wanted]
    if query.get("trigger"):
        rules = [r for r in rules if r["trigger"]["type"] == query["trigger"]]
    if query.get("action"):
        rules = [r for r in rules if r["action"]["ref"] == query["action"]]
    limit, offset = paging(query)
    return json_response(rules[offset : offset + limit], headers={"X-Total-Count": str(len(rules))})


async def get_rule(request: web.Request) -> web.Response:
    ref = request.match_info["ref"]
    rule = loaded_rule(request.app[RUNTIME].ruleset, ref)
    if rule is None:
        raise NotFound(f"no rule {ref!r}")
    return json_response(rule.to_api())


async def list_webhooks(request: web.Request) -> web.Response:
    hooks = request.app[RUNTIME].ruleset.webhooks
    return json_response([shapes.webhook(name, rules) for name, rules in sorted(hooks.items())])


async def get_webhook(request: web.Request) -> web.Response:
    name = request.match_info["name"].strip("/")
    rules = request.app[RUNTIME].ruleset.webhooks.get(name)
    if not rules:
        raise NotFound(f"no webhook {name!r}")
    return json_response(shapes.webhook(name, rules))
