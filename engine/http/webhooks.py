"""Webhook ingest: a request becomes a durable trigger instance, answered 202 after commit.

`POST /webhooks/{name}` (named hooks declared by core.st2.webhook rules or a webhook
definition; other methods when the definition lists them, engine.http.hook_challenge)
and `POST /webhooks/st2` (generic: {"trigger": ref, "payload": {...}}), each also under
/api/v1. Nothing is stored unless the whole request is valid; a 202 means
committed.

Per request, in this order: find the hook → its body size limit → read the raw body →
authenticate (signature over the raw bytes, JWT, or API key; see engine.http.auth) →
parse → dedupe key → store. Credentials never reach the stored payload.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import urllib.parse
from typing import Any

from aiohttp import web

from engine.errors import EngineError, IngestError
from engine.http.auth import ANONYMOUS, GATEKEEPER, Caller, Gatekeeper, check_header_count
from engine.http.content_coding import content_coding, decode_body
from engine.http.context import METRICS, RUNTIME, BacklogFull, error_response_for, json_response
from engine.http.expect import continue_within
from engine.http.hook_challenge import answer_challenge, method_not_allowed
from engine.http.hookdefs import WebhookDefinition
from engine.http.metrics_api import WEBHOOK_LABEL, hook_label
from engine.ingest.bodies import parse_body, parse_body_and_text
from engine.model.hook_payload import NamedHookPost, request_parts
from engine.model.hook_payload import text as hook_text
from engine.model.names import MAX_REF_CHARS, too_long
from engine.model.records import WEBHOOK_TRIGGER, Accepted, NewTriggerInstance
from engine.rules.rule import normalize_webhook_name
from engine.rules.templates import render_value
from engine.store import codec

log = logging.getLogger(__name__)

GENERIC_HOOK = "st2"
# Dedupe values longer than this are stored hashed (the column is an index key).
_MAX_PLAIN_DEDUPE = 200


def add_routes(app: web.Application) -> None:
    # Every method reaches a hook at /webhooks/<name>: a hook's definition may accept more
    # than POST (`methods`), and the others get 405 naming what it accepts. Under /api/v1
    # only POST: GET /api/v1/webhooks/<name> is StackStorm's description of the hook.
    app.router.add_route("*", "/webhooks/{name:.+}", receive, expect_handler=expect_body)
    app.router.add_post("/api/v1/webhooks/{name:.+}", receive, expect_handler=expect_body)


async def expect_body(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue` answered within the hook's body limit (engine.http.expect);
    a path that names no hook gets the general limit, and its 404 after."""
    app = request.app
    runtime = app[RUNTIME]
    limit = runtime.settings.ingest.max_body
    try:
        name, _ = _find_hook(
            normalize_webhook_name(request.match_info["name"]), runtime, app[GATEKEEPER]
        )
    except IngestError:
        name = None
    else:
        limit = app[GATEKEEPER].definition(name).max_body or limit
    answer = await continue_within(request, limit)
    if answer is not None:
        app[METRICS].count_webhook(name or hook_label(request), answer.status)
    return answer


async def receive(request: web.Request) -> web.Response:
    """One webhook, answered and counted by hook and status (hookyard_webhooks_received).

    Errors are answered here (the app has no middlewares; engine.http.guard) so that the
    count sees the final status.
    """
    app = request.app  # a property that looks the app up: read once
    metrics = app[METRICS]
    try:
        name, response = await _receive(request, app)
    except Exception as exc:
        answer = error_response_for(request, exc)
        if answer is None:
            metrics.count_webhook(request.get(WEBHOOK_LABEL) or hook_label(request), 500)
            raise
        metrics.count_webhook(request.get(WEBHOOK_LABEL) or hook_label(request), answer.status)
        return answer
    metrics.count_webhook(name, response.status)
    return response


async def _receive(request: web.Request, app: web.Application) -> tuple[str, web.Response]:
    """(the hook's name, the answer); the name is also put in request[WEBHOOK_LABEL] as
    soon as it is known, for the count of a request that fails later."""
    runtime = app[RUNTIME]
    runtime.ingest_pressure.saw_request()
    gate = app[GATEKEEPER]
    check_header_count(request, gate)
    try:
        name, path_key = _find_hook(
            normalize_webhook_name(request.match_info["name"]), runtime, gate
        )
    except IngestError:
        if request.method != "POST":  # what no hook accepts (hooks take POST by default)
            return hook_label(request), method_not_allowed(request, ("POST",))
        raise
    request[WEBHOOK_LABEL] = name
    definition = gate.definition(name)
    if request.method not in definition.methods:
        return name, method_not_allowed(request, definition.methods)
    if definition.challenge is not None and definition.challenge.query in request.query:
        return name, answer_challenge(request, definition.challenge)
    raw = await read_body(request, definition.max_body or runtime.settings.ingest.max_body)
    content_type = request.headers.get("Content-Type", "")
    placement = definition.apikey
    key_in_body = placement is not None and placement.place == "body"
    max_fields = runtime.settings.ingest.max_form_fields
    body = parse_body(content_type, raw, max_form_fields=max_fields) if key_in_body else None
    if gate.enabled and definition.auth != "none":
        caller = await gate.check_webhook(request, definition, raw, path_key=path_key, body=body)
    else:
        caller = ANONYMOUS
    await gate.check_rates(definition, caller.key)
    # A named hook's body is parsed (and refused when malformed) by the ingest writer
    # process, off this loop, unless this process needs it: for the key in the body or
    # for a custom response.
    parse_in_writer = (
        body is None
        and name != GENERIC_HOOK
        and definition.response is None
        and runtime.ingest_process is not None
    )
    body_text = None  # the body's JSON text, stored verbatim when it may be
    if body is None and not parse_in_writer:
        body, body_text = parse_body_and_text(content_type, raw, max_form_fields=max_fields)
    if key_in_body and isinstance(body, dict):
        body = {k: v for k, v in body.items() if k != placement.name}
    dedupe_key = _dedupe_key(request, definition, raw, caller)
    if name == GENERIC_HOOK:
        item = _generic_instance(body, runtime, dedupe_key)
        Gatekeeper.check_fires(caller, {item.trigger})
    else:
        if caller.key is not None:  # only a key can limit what a caller fires
            rules = runtime.ruleset.webhooks.get(name) or []
            Gatekeeper.check_fires(caller, {WEBHOOK_TRIGGER, *(rule.ref for rule in rules)})
        # The payload is built where it is stored (engine.model.hook_payload), from the header
        # lines as received: off this loop when an ingest writer process stores it.
        dropped = definition.credential_headers
        method, path, query = _request_line(request, definition, path_key)
        if parse_in_writer:
            post = NamedHookPost(
                request.raw_headers, dropped, None, content_type, raw, method, path, query
            )
        else:
            if body_text is None:  # a form, text, or JSON that may not be stored as sent
                body_text = codec.dumps(body, "the webhook body")
            # Refused as the ingest writer process refuses it (stored_body_text).
            codec.check_no_lone_surrogate(body_text, "the webhook body")
            post = NamedHookPost(
                request.raw_headers, dropped, body_text, method=method, path=path, query=query
            )
        item = NewTriggerInstance(
            trigger=WEBHOOK_TRIGGER, payload=None, webhook=name, dedupe_key=dedupe_key, post=post
        )
    await _shed_load(runtime)
    accepted = await runtime.ingest.add_trigger_instance(item)
    return name, _answer(definition, item, accepted, body, request)


def _request_line(
    request: web.Request, definition: WebhookDefinition, path_key: str | None
) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """The method, path and query parameters a named hook's payload shows, credentials
    left out: the API key query parameters and a key sent as the path's last segment."""
    pairs = urllib.parse.parse_qsl(
        request.query_string, keep_blank_values=True, errors="surrogateescape"
    )
    # Read as header values are: UTF-8, else ISO-8859-1 (a lone surrogate is not text).
    query = [(_query_text(name), _query_text(value)) for name, value in pairs]
    path = request.path
    if path_key is not None:
        path = path.rstrip("/").rpartition("/")[0]
    if "\x00" in path or any("\x00" in name or "\x00" in value for name, value in query):
        raise IngestError(
            "the URL holds a NUL character (%00), which cannot be stored; remove it", 400
        )
    return request_parts(request.method, path, query, definition.credential_query)


def _query_text(value: str) -> str:
    return hook_text(value.encode("utf-8", "surrogateescape"))


def _find_hook(name: str, runtime, gate: Gatekeeper) -> tuple[str, str | None]:
    """(hook name, key from the path). Hook names may contain slashes, so a path key is
    only the last segment after a hook whose definition puts its key in the path."""
    if name == GENERIC_HOOK or name in runtime.ruleset.webhooks or name in gate.definitions:
        return name, None
    head, _, tail = name.rpartition("/")
    definition = gate.definitions.get(head) if head else None
    placement = definition.apikey if definition is not None else None
    if placement is not None and placement.place == "path" and tail:
        return head, tail
    raise IngestError(
        f"no webhook named {name!r}: no enabled rule has trigger core.st2.webhook "
        f"with url {name!r} and no webhooks.{name} is defined (GET /api/v1/webhooks lists them)",
        404,
    )


def _dedupe_key(
    request: web.Request, definition: WebhookDefinition, raw: bytes, caller: Caller
) -> str | None:
    """The hook-namespaced dedupe key: configured header, body hash or the sender's id."""
    spec = definition.dedupe
    value: str | None = None
    if spec is None or spec.source == "delivery_id":
        value = caller.delivery_id
    elif spec.header is not None:
        value = request.headers.get(spec.header) or None
    elif spec.source == "body_hash":
        value = "sha256:" + hashlib.sha256(raw).hexdigest()
    if value is None:
        return None
    if not value.isascii():
        # A header value that is not UTF-8 holds surrogate escapes, which no store can
        # bind: read as ISO-8859-1 instead, as the stored payload reads it.
        value = hook_text(value.encode("utf-8", "surrogateescape"))
    if len(value) > _MAX_PLAIN_DEDUPE:
        value = "sha256:" + hashlib.sha256(value.encode()).hexdigest()
    return f"{definition.name}:{value}"


def _answer(
    definition: WebhookDefinition,
    item: NewTriggerInstance,
    accepted: Accepted,
    body: Any,
    request: web.Request,
) -> web.Response:
    standard = {
        "id": accepted.id,
        "trigger": item.trigger,
        "webhook": item.webhook,
        "duplicate": accepted.duplicate,
    }
    custom = definition.response
    if custom is None:
        return _standard_response(item, accepted)
    context = {
        "trigger_instance": {"id": accepted.id, "duplicate": accepted.duplicate},
        "body": body,
        "headers": _payload_headers(item.payload_data()),
    }
    try:
        rendered = render_value(custom.body, context)
    except EngineError as exc:
        # Stored already: the sender must not retry, so answer the standard 202.
        log.warning(
            "webhook response template failed; answered the standard reply",
            extra={"webhook": definition.name, "trigger_instance": accepted.id, "error": str(exc)},
        )
        return json_response(standard, 202)
    if isinstance(rendered, str):
        return web.Response(text=rendered, status=custom.status, content_type="text/plain")
    return json_response(rendered, custom.status)


# The standard 202 body, byte for byte what json_response writes for the same dict, built
# without a dict and an encoder per request (the hot path of ingest): the part after the
# id is encoded once per (trigger, webhook); ids are hex, so they need no escaping.
_JSON_HEADERS = {"Content-Type": "application/json"}
_standard_tails: dict[tuple[str, str | None], str] = {}


def _standard_response(item: NewTriggerInstance, accepted: Accepted) -> web.Response:
    key = (item.trigger, item.webhook)
    tail = _standard_tails.get(key)
    if tail is None:
        tail = f'", "trigger": {json.dumps(item.trigger)}, "webhook": {json.dumps(item.webhook)}'
        if len(_standard_tails) < 10_000:  # trigger and hook names are few; bounded anyway
            _standard_tails[key] = tail
    duplicate = ', "duplicate": true}' if accepted.duplicate else ', "duplicate": false}'
    body = '{"id": "' + accepted.id + tail + duplicate
    return web.Response(body=body.encode(), status=202, headers=_JSON_HEADERS)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, decoded from its Content-Encoding, refusing (413) as soon as it
    passes `limit` bytes, as sent or decoded (engine.http.content_coding)."""
    coding = content_coding(request.headers)
    raw = await _read_raw_body(request, limit)
    if coding is None or not raw:
        return raw
    return decode_body(raw, coding, limit)


async def _read_raw_body(request: web.Request, limit: int) -> bytes:
    declared = request.content_length
    if declared is not None and declared > limit:
        raise IngestError(f"body of {declared} bytes is over the limit of {limit} bytes", 413)
    if declared == 0:
        return b""
    if declared is not None:
        # The parser delivers exactly Content-Length bytes, already checked against limit.
        try:
            return await request.content.readexactly(declared)
        except asyncio.IncompleteReadError as exc:
            raise IngestError(
                f"body ended after {len(exc.partial)} of the {declared} bytes announced "
                "by Content-Length"
            ) from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise IngestError(f"body is over the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _payload_headers(payload: Any) -> Any:
    return payload.get("headers", {}) if isinstance(payload, dict) else {}


def _generic_instance(body: Any, runtime, dedupe_key: str | None) -> NewTriggerInstance:
    if not isinstance(body, dict):
        raise IngestError(
            'the st2 webhook needs a JSON object body: {"trigger": "<pack>.<name>", '
            '"payload": {...}}'
        )
    trigger = body.get("trigger")
    if not isinstance(trigger, str) or not trigger:
        raise IngestError('the st2 webhook body needs "trigger": the trigger type ref')
    if len(trigger) > MAX_REF_CHARS:
        raise IngestError(f'"trigger" {too_long(len(trigger), MAX_REF_CHARS)}')
    payload: Any = body.get("payload", {})
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise IngestError('"payload" must be a JSON object')
    # A registered trigger type is accepted even when no rule listens yet (StackStorm
    # stores its instances all the same); its payload must fit its payload_schema.
    trigger_type = runtime.packs.trigger_type(trigger)
    if trigger_type is not None:
        trigger_type.validate_payload(payload)
    elif trigger not in runtime.known_trigger_types:
        raise IngestError(
            f"unknown trigger type {trigger!r}: no pack registers it and no loaded rule "
            "listens to it (GET /api/v1/triggertypes lists them)",
            400,
        )
    return NewTriggerInstance(trigger=trigger, payload=payload, dedupe_key=dedupe_key)


async def _shed_load(runtime) -> None:
    backlog = runtime.store.known_backlog()
    if backlog is None:
        backlog = await runtime.store.pending_backlog()
    if backlog >= runtime.settings.ingest.max_backlog:
        raise BacklogFull(
            f"{backlog} trigger instances are waiting to be processed "
            f"(limit {runtime.settings.ingest.max_backlog})",
            retry_after=runtime.settings.ingest.retry_after,
        )
