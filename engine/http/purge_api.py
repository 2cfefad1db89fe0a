"""`POST /api/v1/purge`: what `hookyard purge --url` sends (an admin key needed).

Body: `{"kinds": [...], "older_than": "7d", "dry_run": false}`, every field optional —
the defaults are the configured retention of every kind that has one. Answers
`{"purged": {kind: count}, "dry_run": bool}` once the purge is done, batch by batch as
the retention role does it (engine.workers.retention).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from engine.errors import ConfigError, IngestError
from engine.http.api_json import read_json
from engine.http.auth import GATEKEEPER
from engine.http.context import RUNTIME, json_response
from engine.http.guard import guarded
from engine.model.records import utcnow
from engine.support.durations import duration_seconds
from engine.workers.retention import PurgePlan, run_plan

_FIELDS = ("kinds", "older_than", "dry_run")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/purge", guarded(purge))


async def purge(request: web.Request) -> web.Response:
    await request.app[GATEKEEPER].require_key(request, admin=True)
    body = await _body(request)
    kinds = body.get("kinds") or []
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
        raise IngestError("'kinds' must be a list of names")
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise IngestError("'dry_run' must be true or false")
    older_than = body.get("older_than")
    seconds = None
    if older_than is not None:
        try:
            seconds = duration_seconds(older_than)
        except ValueError as exc:
            raise IngestError(f"'older_than': {exc}") from None
        if not seconds:
            raise IngestError("'older_than': give a duration longer than zero")
    runtime = request.app[RUNTIME]
    retention = runtime.settings.retention
    try:
        plan = PurgePlan.requested(utcnow(), retention, kinds, seconds)
    except ConfigError as exc:
        raise IngestError(str(exc)) from None
    counts = await run_plan(
        runtime.store, plan, retention, dry_run=dry_run, observe=runtime.observe
    )
    return json_response({"purged": counts, "dry_run": dry_run})


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = await read_json(request, {})
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise IngestError("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise IngestError("the body must be a JSON object")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise IngestError(f"unknown field {unknown[0]!r}; known: {', '.join(_FIELDS)}")
    return data
