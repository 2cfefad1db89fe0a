"""Rule enforcements (a rule matched an event) under /api/v1/ruleenforcements: the list."""

from __future__ import annotations

from aiohttp import web

from engine.http import shapes
from engine.http.context import RUNTIME
from engine.http.paging import add_get_both_slashes, filters, page_response, paging

ENFORCEMENT_FILTERS = (
    "trigger_instance",
    "rule_ref",
    "execution",
    "enforced_at_gt",
    "enforced_at_lt",
)


def add_routes(app: web.Application) -> None:
    add_get_both_slashes(app, "/api/v1/ruleenforcements", list_enforcements)


async def list_enforcements(request: web.Request) -> web.Response:
    limit, offset = paging(request.query)
    page = await request.app[RUNTIME].store.list_enforcements(
        filters(request.query, ENFORCEMENT_FILTERS), limit, offset
    )
    return page_response(page, shapes.enforcement)
