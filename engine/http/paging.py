"""Lists under /api/v1 as StackStorm serves them: paging, filters, the total, both slashes.

Lists are newest first with `limit`/`offset` (limit=-1: all) and the total count in
X-Total-Count, which the st2 CLI reads. A read route answers with or without a trailing
slash, as StackStorm's do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from engine.errors import IngestError
from engine.http.context import Handler, json_response
from engine.http.guard import guarded
from engine.model.records import Page

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
ALL = 1_000_000_000


def add_get_both_slashes(app: web.Application, path: str, handler: Handler) -> None:
    """GET `path` and `path/`, guarded."""
    app.router.add_get(path, guarded(handler))
    app.router.add_get(path + "/", guarded(handler))


def paging(query: Mapping[str, str]) -> tuple[int, int]:
    """(limit, offset) of a list request; IngestError (400) when they are not numbers."""
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
    """The filters among `names` that the query gives a value."""
    return {name: query[name] for name in names if query.get(name) not in (None, "")}


def page_response(page: Page, shape: Callable[[Any], Any]) -> web.Response:
    """A page of records in their API shape, with X-Total-Count."""
    return json_response(
        [shape(item) for item in page.items], headers={"X-Total-Count": str(page.total)}
    )
