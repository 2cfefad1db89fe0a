"""Webhook ingest: a request becomes a durable trigger instance, answered 202 after commit.

`POST /webhooks/{name}` (named hooks declared by core.st2.webhook rules) and
`POST /webhooks/st2` (generic: {"trigger": ref, "payload": {...}}), each also under
/api/v1. Nothing is stored unless the whole request is valid; a 202 means committed.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.errors import IngestError, StoreBusy
from engine.http.app import RUNTIME, json_response
from engine.http.bodies import header_maps, parse_body
from engine.model import WEBHOOK_TRIGGER, NewTriggerInstance
from engine.rules.rule import normalize_webhook_name

GENERIC_HOOK = "st2"


def add_routes(app: web.Application) -> None:
    for prefix in ("/webhooks", "/api/v1/webhooks"):
        app.router.add_post(prefix + "/{name:.+}", receive)


async def receive(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    name = normalize_webhook_name(request.match_info["name"])
    if name == GENERIC_HOOK:
        raw = await read_body(request, runtime.settings.ingest.max_body)
        item = _generic_instance(request, raw, runtime.known_trigger_types)
    else:
        rules = runtime.ruleset.webhooks.get(name)
        if not rules:
            raise IngestError(
                f"no webhook named {name!r}: no enabled rule has trigger core.st2.webhook "
                f"with url {name!r} (GET /api/v1/webhooks lists them)",
                404,
            )
        raw = await read_body(request, runtime.settings.ingest.max_body)
        headers, headers_lower = header_maps(request.headers)
        body = parse_body(request.headers.get("Content-Type", ""), raw)
        payload = {"headers": headers, "headers_lower": headers_lower, "body": body}
        item = NewTriggerInstance(trigger=WEBHOOK_TRIGGER, payload=payload, webhook=name)
    await _shed_load(runtime)
    accepted = await runtime.store.add_trigger_instance(item)
    return json_response(
        {
            "id": accepted.id,
            "trigger": item.trigger,
            "webhook": item.webhook,
            "duplicate": accepted.duplicate,
        },
        202,
    )


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it passes `limit` bytes."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise IngestError(f"body of {declared} bytes is over the limit of {limit} bytes", 413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise IngestError(f"body is over the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _generic_instance(
    request: web.Request, raw: bytes, known_triggers: set[str]
) -> NewTriggerInstance:
    content_type = request.headers.get("Content-Type", "")
    body = parse_body(content_type, raw)
    if not isinstance(body, dict):
        raise IngestError(
            'the st2 webhook needs a JSON object body: {"trigger": "<pack>.<name>", '
            '"payload": {...}}'
        )
    trigger = body.get("trigger")
    if not isinstance(trigger, str) or not trigger:
        raise IngestError('the st2 webhook body needs "trigger": the trigger type ref')
    payload: Any = body.get("payload", {})
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise IngestError('"payload" must be a JSON object')
    if trigger not in known_triggers:
        raise IngestError(
            f"unknown trigger type {trigger!r}: no loaded rule listens to it",
            400,
        )
    return NewTriggerInstance(trigger=trigger, payload=payload)


async def _shed_load(runtime) -> None:
    backlog = await runtime.store.pending_backlog()
    if backlog >= runtime.settings.ingest.max_backlog:
        raise StoreBusy(
            f"{backlog} trigger instances are waiting to be processed "
            f"(limit {runtime.settings.ingest.max_backlog})",
            retry_after=runtime.settings.ingest.retry_after,
        )
