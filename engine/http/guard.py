"""What every route but the webhooks runs around its handler: the caller's key checked,
and errors answered as JSON.

Handlers are wrapped one by one (`guarded`) instead of by app middlewares: aiohttp runs
an app's middlewares around every request, and for ingest — the hot path, which answers
its own errors and checks its hook's own credential — they were a fifth of the cost of
an accepted webhook. `check_all_guarded` makes a route added without it fail the start.
`unknown_route` answers paths no route serves, as JSON 404 or 405.
"""

from __future__ import annotations

import functools

from aiohttp import web

from engine.http import auth
from engine.http.context import Handler, error_response, error_response_for


def guarded(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def guarded_handler(request: web.Request) -> web.StreamResponse:
        try:
            await auth.check_request(request)
            return await handler(request)
        except Exception as exc:
            response = error_response_for(request, exc)
            if response is None:
                raise
            return response

    guarded_handler.guarded = True  # type: ignore[attr-defined]
    return guarded_handler


def is_guarded(handler: Handler) -> bool:
    return getattr(handler, "guarded", False)


def check_all_guarded(app: web.Application, unguarded: set[Handler]) -> None:
    """Raise if a route's handler is neither guarded nor one of `unguarded`."""
    for route in app.router.routes():
        handler = route.handler
        if not is_guarded(handler) and handler not in unguarded:
            raise RuntimeError(
                f"route {route.method} {route.resource.canonical if route.resource else '?'}"
                f" has an unguarded handler {handler!r}: wrap it with engine.http.guard.guarded"
            )


def add_unknown_route(app: web.Application) -> None:
    """Registered last: answers what no other route serves — after the same checks as
    every route, so the API's paths cannot be mapped without a key."""
    app.router.add_route("*", "/{unknown_path:.*}", guarded(unknown_route))


async def unknown_route(request: web.Request) -> web.Response:
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if any(getattr(route.handler, "__wrapped__", None) is unknown_route for route in resource):
            continue
        _, methods = await resource.resolve(request)
        allowed |= methods
    if allowed:
        return error_response(
            f"Method Not Allowed: {request.method} {request.path}",
            405,
            {"Allow": ",".join(sorted(allowed))},
        )
    return error_response(f"Not Found: {request.method} {request.path}", 404)
