"""The ceiling for the ingest benchmark: aiohttp that parses the JSON body and answers 202.

    python bench/bare_server.py --port 18081

Same framework, same loop, same settings as `hookyard serve` (no access log, one process),
and nothing else: no payload building, no store, no commit. Whatever Hookyard reaches
relative to this is what durability and the engine cost on top of HTTP and JSON.
"""

from __future__ import annotations

import argparse
import json

from aiohttp import web


async def accept(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    return web.Response(
        body=json.dumps({"accepted": isinstance(body, dict)}).encode(),
        status=202,
        content_type="application/json",
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/webhooks/{name:.+}", accept)
    app.router.add_get("/health", lambda request: web.json_response({"status": "alive"}))
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None, backlog=2048)


if __name__ == "__main__":
    main()
