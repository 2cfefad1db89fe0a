"""`Expect: 100-continue` answered with the body limit in mind.

aiohttp's default answer to `Expect: 100-continue` is an immediate `100 Continue`, so a
client announcing a 5 MB body was invited to send all of it before its 413. Here a
request whose Content-Length is over the route's limit gets the 413 at once, without
`100 Continue` (and its connection is closed after the answer, since the body it may
still send is unwanted).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.http import HttpVersion11

from engine.http.context import RUNTIME, error_response

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


async def continue_within(request: web.Request, limit: int) -> web.StreamResponse | None:
    """The expect handler's answer: None after `100 Continue` (the route's handler runs
    next), or the final answer: 413 over `limit`, 417 for an expectation not understood."""
    declared = request.content_length
    if declared is not None and declared > limit:
        response = error_response(
            f"body of {declared} bytes is over the limit of {limit} bytes", 413
        )
        response.force_close()
        return response
    if request.version != HttpVersion11:
        return None  # HTTP/1.0 has no 100 Continue: the client sends its body anyway
    expect = request.headers.get("Expect", "")
    if expect.lower() != "100-continue":
        return error_response(f"Expect: {expect!r} is not understood; send 100-continue", 417)
    await request.writer.write(CONTINUE)
    request.writer.output_size = 0  # the 100 is not part of the response
    return None


async def expect_api(request: web.Request) -> web.StreamResponse | None:
    """For the API's routes: their bodies are limited to ingest.max_body."""
    return await continue_within(request, request.app[RUNTIME].settings.ingest.max_body)


def install(app: web.Application) -> None:
    """Give every route still on aiohttp's default expect handler `expect_api`.

    aiohttp takes an expect handler only as an argument when a route is added; setting it
    here once keeps every add_routes() free of it (the webhooks pass their own).
    """
    for route in app.router.routes():
        current = getattr(route, "_expect_handler", None)
        if current is not None and current.__name__ == "_default_expect_handler":
            route._expect_handler = expect_api  # type: ignore[attr-defined]
