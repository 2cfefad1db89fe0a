"""The one reader of the API's JSON request bodies.

Every API route that takes a JSON body reads it here, so that a body nesting 100,000
arrays is a 400 naming the limit (engine.ingest.bodies.MAX_JSON_DEPTH, as for webhooks),
not a RecursionError and a 500.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.errors import IngestError
from engine.http.content_coding import content_coding
from engine.ingest.bodies import load_json


async def read_json(request: web.Request, when_empty: Any = None) -> Any:
    """The body's JSON data, or `when_empty` for an empty body.

    json.JSONDecodeError or UnicodeDecodeError (both ValueErrors) when the body is no JSON,
    for the route to answer in its own words; IngestError (400) when it nests too deep,
    415 when it is compressed (aiohttp does not decode bodies here: create_app).
    """
    if content_coding(request.headers) is not None:
        raise IngestError(
            "the API takes request bodies uncompressed: send no Content-Encoding", 415
        )
    raw = await request.read()
    if not raw:
        return when_empty
    return load_json(raw)
