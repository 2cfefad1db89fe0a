"""Inquiries under /api/v1/inquiries in StackStorm's shapes (`st2 inquiry list|get|respond`).

An inquiry is a `core.ask` execution waiting for a response (engine.packs.inquiry). Lists
and gets answer `{"id", "route", "ttl", "users", "roles", "schema"}`; `PUT` with
`{"id": ..., "response": {...}}` answers it: the response is checked against the ask's
schema (400 naming what is wrong, nothing changes), the responder against its `users`
and `roles` (403), and an inquiry answered, timed out or canceled is refused (400, as
StackStorm does). An accepted response ends the ask `succeeded` with its result plus
`"response"`, and resumes the paused workflows above it; the reply is `{"id", "response"}`.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from engine.errors import Conflict, IngestError
from engine.http import rbac
from engine.http.api_json import read_json
from engine.http.auth import API_KEY
from engine.http.context import RUNTIME, json_response
from engine.http.guard import guarded
from engine.http.paging import add_get_both_slashes, paging
from engine.model.records import INQUIRY_PENDING, Execution
from engine.packs.inquiry import InquiryError, may_respond, validate_response
from engine.workers.generic_triggers import generic_source

# Who answered, with auth disabled (StackStorm's system user answers then).
SYSTEM_USER = "stanley"


def add_routes(app: web.Application) -> None:
    add_get_both_slashes(app, "/api/v1/inquiries", list_inquiries)
    app.router.add_get("/api/v1/inquiries/{id}", guarded(get_inquiry))
    app.router.add_get("/api/v1/inquiries/{id}/", guarded(get_inquiry))
    app.router.add_put("/api/v1/inquiries/{id}", guarded(respond))
    app.router.add_put("/api/v1/inquiries/{id}/", guarded(respond))


def inquiry_api(execution: Execution) -> dict[str, Any]:
    asked = execution.result if isinstance(execution.result, dict) else {}
    return {
        "id": execution.id,
        "route": asked.get("route", ""),
        "ttl": asked.get("ttl"),
        "users": asked.get("users", []),
        "roles": asked.get("roles", []),
        "schema": asked.get("schema"),
    }


async def list_inquiries(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    limit, offset = paging(request.query)
    page = await runtime.store.list_inquiries(limit, offset)
    headers = {"X-Total-Count": str(page.total)}
    if "limit" in request.query:
        headers["X-Limit"] = str(limit)
    return json_response([inquiry_api(item) for item in page.items], headers=headers)


async def get_inquiry(request: web.Request) -> web.Response:
    execution = await _pending(request)
    return json_response(inquiry_api(execution))


async def respond(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    inquiry_id = request.match_info["id"]
    response = await _response_of(request, inquiry_id)
    execution = await _pending(request)
    asked = execution.result if isinstance(execution.result, dict) else {}
    key = request.get(API_KEY)
    if key is not None:
        refusal = may_respond(asked, key.name, key.role)
        if refusal is not None:
            raise rbac.denied(key, f"respond to inquiry {inquiry_id}", refusal)
    try:
        validate_response(inquiry_id, asked.get("schema") or {}, response)
    except InquiryError as exc:
        raise IngestError(str(exc)) from None
    responder = key.name if key is not None else SYSTEM_USER
    try:
        await runtime.store.respond_inquiry(
            inquiry_id,
            {**asked, "response": response},
            responder,
            generic_source(runtime, execution),
        )
    except Conflict as exc:  # answered (or timed out) since it was read
        raise IngestError(str(exc)) from None
    return json_response({"id": inquiry_id, "response": response})


async def _pending(request: web.Request) -> Execution:
    """The inquiry, still waiting for its response (StackStorm's check_inquiry: 400 when
    it is not)."""
    inquiry_id = request.match_info["id"]
    execution = await request.app[RUNTIME].store.get_inquiry(inquiry_id)
    if execution.status == INQUIRY_PENDING:
        return execution
    if execution.status == "timeout":
        raise IngestError(f'Inquiry "{inquiry_id}" timed out and cannot be responded to.')
    if execution.status == "succeeded":
        raise IngestError(f'Inquiry "{inquiry_id}" has already been responded to.')
    raise IngestError(f'Inquiry "{inquiry_id}" is {execution.status} and cannot be responded to.')


async def _response_of(request: web.Request, inquiry_id: str) -> Any:
    try:
        body = await read_json(request)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise IngestError("the request body must be JSON") from None
    if not isinstance(body, dict) or "response" not in body:
        raise IngestError(
            'answer an inquiry with a JSON object: {"id": "<inquiry id>", "response": {...}}'
        )
    unknown = sorted(set(body) - {"id", "response"})
    if unknown:
        raise IngestError(f"unknown field(s) {', '.join(map(repr, unknown))}: send id and response")
    if body.get("id") not in (None, inquiry_id):
        raise IngestError(
            f'"id" {body["id"]!r} does not match the inquiry in the URL ({inquiry_id!r})'
        )
    return body["response"]
