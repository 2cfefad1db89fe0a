"""StackStorm's event stream: `GET /api/v1/stream` (also `/stream/v1/stream`, where st2's
CLI finds it through ST2_STREAM_URL) as Server-Sent Events, and the output of an
execution, `GET /api/v1/executions/<id>/output` (text) and
`/stream/v1/executions/<id>/output` (events).

Facts from st2 (st2stream/controllers/v1/stream.py, st2common/stream/listener.py): each
event is `event: <name>` and `data: <JSON>`; `events=` is a comma-separated list of
fnmatch patterns (default: announcements, execution and liveaction changes);
`action_refs=` and `execution_ids=` narrow it; `end_event` + `end_execution_id` end the
stream after that execution's event with a finished status. The CLI authenticates the
stream with `?st2-api-key=` (engine.http.auth reads it). Hookyard adds `id: <n>` so a
client resumes with `Last-Event-ID`, and a final `st2.stream__dropped` event for a client
too slow to keep up.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from engine.errors import IngestError
from engine.http.context import RUNTIME
from engine.http.guard import guarded
from engine.http.stream_filter import StreamFilter, parse_filter
from engine.http.stream_hub import StreamEvent, StreamHub
from engine.http.stream_shapes import shape
from engine.model.records import TERMINAL_EXECUTION_STATUSES
from engine.model.stream import EXECUTION_OUTPUT_CREATE, EXECUTION_UPDATE, STDERR, STDOUT

log = logging.getLogger(__name__)

STREAM_HUB = web.AppKey("stream_hub", StreamHub)
DROPPED_EVENT = "st2.stream__dropped"
# st2's stream endpoint for one execution's output ends with this.
EOF_EVENT = "event: EOF\ndata: ''\n\n"
# Events waiting for a client go out in writes of up to this many bytes.
MAX_WRITE_BYTES = 256 * 1024
_HEADERS = {
    "Content-Type": "text/event-stream; charset=UTF-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
_KEEP_ALIVE = b": keep-alive\n\n"


def add_routes(app: web.Application) -> None:
    for path in ("/api/v1/stream", "/stream/v1/stream"):
        app.router.add_get(path, guarded(stream))
        app.router.add_get(path + "/", guarded(stream))
    app.router.add_get("/api/v1/executions/{id}/output", guarded(execution_output_text))
    app.router.add_get("/stream/v1/executions/{id}/output", guarded(execution_output_events))
    app.cleanup_ctx.append(_hub_context)


async def _hub_context(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    hub = StreamHub(runtime.store, runtime.settings.stream, lambda entry: shape(runtime, entry))
    app[STREAM_HUB] = hub
    hub.start()
    try:
        yield
    finally:
        await hub.stop()


def _last_event_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID", request.query.get("last_event_id"))
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise IngestError(
            f"Last-Event-ID must be an event id (a number), got {raw[:40]!r}"
        ) from None
    if value < 0:
        raise IngestError(f"Last-Event-ID must not be negative, got {value}")
    return value


# --- the stream -------------------------------------------------------------------------


class _Gone(Exception):
    """The client stopped reading (a write timed out) or went away."""


async def _write(response: web.StreamResponse, data: bytes, timeout: float) -> None:
    try:
        await asyncio.wait_for(response.write(data), timeout)
    except (TimeoutError, ConnectionError, RuntimeError) as exc:
        raise _Gone from exc


async def stream(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    hub = request.app[STREAM_HUB]
    settings = runtime.settings.stream
    wanted = parse_filter(request.query)
    last_id = _last_event_id(request)
    try:
        await hub.connect()
    except OverflowError:
        raise IngestError(
            f"too many stream clients: {settings.max_clients} are connected to this process"
            " (stream.max_clients); retry later",
            503,
        ) from None
    try:
        response = web.StreamResponse(headers=_HEADERS)
        await response.prepare(request)
        # A reconnecting client waits this long (ms) before trying again.
        await _write(response, b"retry: 2000\n\n", settings.write_timeout)
        try:
            await _serve(hub, response, wanted, last_id, settings.heartbeat, settings.write_timeout)
        except _Gone:
            pass
        return response
    finally:
        hub.disconnect()


async def _serve(
    hub: StreamHub,
    response: web.StreamResponse,
    wanted: StreamFilter,
    last_id: int | None,
    heartbeat: float,
    write_timeout: float,
) -> None:
    position = hub.end_index
    if last_id is not None:
        oldest = hub.oldest_seq
        if oldest is None or last_id < oldest - 1:
            until = hub.cursor if oldest is None else oldest - 1
            async for event in hub.catch_up(last_id, until):
                if await _send(response, event, wanted, write_timeout):
                    return
            last_id = max(last_id, until)
        position = hub.index_after_seq(last_id)
    while True:
        # No await between the last look at end_index and the wait below: the hub
        # publishes only while this task waits.
        while position < hub.end_index:
            if position < hub.first_index:
                await _drop(response, hub, position, write_timeout)
                return
            # What the client wants of the events waiting, in one write (bounded).
            frames: list[bytes] = []
            size = 0
            ended = False
            while position < hub.end_index and size < MAX_WRITE_BYTES and not ended:
                event = hub.event_at(position)
                position += 1
                if wanted.wants(event):
                    frames.append(event.frame)
                    size += len(event.frame)
                ended = wanted.ends_with(event)
            if frames:
                await _write(response, b"".join(frames), write_timeout)
            if ended:
                return
        await hub.wait_changed(heartbeat)
        if hub.end_index == position:
            await _write(response, _KEEP_ALIVE, write_timeout)


async def _send(
    response: web.StreamResponse, event: StreamEvent, wanted: StreamFilter, timeout: float
) -> bool:
    """Write `event` if the client wants it; True when it ends the stream."""
    if wanted.wants(event):
        await _write(response, event.frame, timeout)
    return wanted.ends_with(event)


async def _drop(
    response: web.StreamResponse, hub: StreamHub, position: int, timeout: float
) -> None:
    # The last id the client got in full: resume after it.
    resume = hub.event_at(hub.first_index).seq - 1 if hub.end_index > hub.first_index else 0
    log.warning("a stream client fell %d events behind; dropped", hub.first_index - position)
    body = {
        # "status" and "id" keep st2's CLI, which reads every event, from failing on it.
        "id": None,
        "status": "dropped",
        "reason": "this client fell more than stream.client_queue events behind",
        "resume_after": resume,
    }
    await _write(
        response,
        f"event: {DROPPED_EVENT}\ndata: {json.dumps(body)}\n\n".encode(),
        timeout,
    )


# --- one execution's output ---------------------------------------------------------------


def _output_type(request: web.Request) -> str | None:
    output_type = request.query.get("output_type") or None
    if output_type in (None, "all"):
        return None
    if output_type not in (STDOUT, STDERR):
        raise IngestError(f"output_type must be stdout, stderr or all, got {output_type[:40]!r}")
    return output_type


async def execution_output_text(request: web.Request) -> web.Response:
    """The output stored so far, as text (st2 execution tail on a finished execution)."""
    runtime = request.app[RUNTIME]
    execution = await runtime.store.get_execution(request.match_info["id"])
    chunks = await runtime.store.list_output(execution.id, _output_type(request))
    return web.Response(text="".join(c.data for c in chunks), content_type="text/plain")


async def execution_output_events(request: web.Request) -> web.StreamResponse:
    """st2stream's output stream: what is stored, then new output until the execution
    ends, then `EOF`."""
    runtime = request.app[RUNTIME]
    hub = request.app[STREAM_HUB]
    settings = runtime.settings.stream
    output_type = _output_type(request)
    execution = await runtime.store.get_execution(request.match_info["id"])
    try:
        await hub.connect()
    except OverflowError:
        raise IngestError("too many stream clients; retry later", 503) from None
    try:
        position = hub.end_index
        response = web.StreamResponse(headers=_HEADERS)
        await response.prepare(request)
        try:
            stored = await runtime.store.list_output(execution.id, output_type)
            seen = max((chunk.id or 0 for chunk in stored), default=0)
            for chunk in stored:
                data = {"execution_id": execution.id, "output_type": chunk.output_type,
                        "data": chunk.data}  # fmt: skip
                await _write(
                    response,
                    f"event: {EXECUTION_OUTPUT_CREATE}\ndata: {json.dumps(data)}\n\n".encode(),
                    settings.write_timeout,
                )
            if execution.status not in TERMINAL_EXECUTION_STATUSES:
                await _follow_output(
                    hub, response, execution.id, output_type, position, seen, settings
                )
            await _write(response, EOF_EVENT.encode(), settings.write_timeout)
        except _Gone:
            pass
        return response
    finally:
        hub.disconnect()


async def _follow_output(
    hub: StreamHub,
    response: web.StreamResponse,
    execution_id: str,
    output_type: str | None,
    position: int,
    seen: int,
    settings: Any,
) -> None:
    # The ring position was taken before the stored output was read: a piece in both is
    # skipped by its number (`seen`: the highest one already sent).
    wanted = StreamFilter(
        events=(EXECUTION_OUTPUT_CREATE, EXECUTION_UPDATE),
        action_refs=frozenset(),
        execution_ids=frozenset({execution_id}),
        end_event=EXECUTION_UPDATE,
        end_execution_id=execution_id,
    )
    while True:
        if position < hub.first_index:
            return
        while position < hub.end_index:
            event = hub.event_at(position)
            position += 1
            if not wanted.wants(event):
                continue
            if wanted.ends_with(event):
                return
            if event.name != EXECUTION_OUTPUT_CREATE:
                continue
            piece = json.loads(event.data)
            if int(piece.get("id") or 0) <= seen:
                continue
            if output_type is None or piece.get("output_type") == output_type:
                await _write(response, event.frame, settings.write_timeout)
        await hub.wait_changed(settings.heartbeat)
        if position == hub.end_index:
            await _write(response, _KEEP_ALIVE, settings.write_timeout)
