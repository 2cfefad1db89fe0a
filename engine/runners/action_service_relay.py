"""The engine's end of a Python action's ``action_service`` channel.

Two pipes beside the action's result channel: the child writes one JSON request a line
(engine.runners.action_service), the relay answers each with one line. Datastore calls go
to the request's ``datastore`` (the execution worker names local keys after the pack it
knows, so a child cannot write outside it), dispatches to its ``dispatch_trigger``. The
child is untrusted: an unreadable or oversized request is answered with an error (an
oversized one is read past and dropped), and nothing it sends reaches the store unchecked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from engine.errors import EngineError
from engine.runners.action_service import MAX_VALUE_BYTES
from engine.runners.base import RunRequest

log = logging.getLogger(__name__)

# One request line: a value of MAX_VALUE_BYTES JSON-escaped, plus room for the rest.
MAX_REQUEST_BYTES = 8 * MAX_VALUE_BYTES
_READ_CHUNK = 65536


class ServiceChannel:
    """The pipe pair of one run. ``child_fds`` go to the child (run_process closes our
    copies once it has started); ``serve`` answers until the child closes its end."""

    def __init__(self, request: RunRequest) -> None:
        self._request = request
        request_read, self.request_write = os.pipe()
        self.reply_read, reply_write = os.pipe()
        # Ours, wrapped at once so close() always releases them, served or not.
        self._requests = os.fdopen(request_read, "rb", buffering=0)
        self._replies = os.fdopen(reply_write, "wb", buffering=0)

    @property
    def child_fds(self) -> tuple[int, int]:
        return (self.request_write, self.reply_read)

    def child_argument(self) -> str:
        return f"{self.request_write},{self.reply_read}"

    def close(self) -> None:
        self._requests.close()
        self._replies.close()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        read_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), self._requests
        )
        write_transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, self._replies
        )
        writer = asyncio.StreamWriter(write_transport, protocol, None, loop)
        try:
            async for line in _lines(reader):
                if line is None:
                    error = f"action_service request larger than {MAX_REQUEST_BYTES} bytes"
                    await _write(writer, {"error": error})
                else:
                    await _write(writer, await self._answer(line))
        except (BrokenPipeError, ConnectionResetError):
            return  # the child went away mid-reply
        finally:
            read_transport.close()
            write_transport.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            message = json.loads(line)
        except ValueError:
            return {"error": "action_service request is not JSON"}
        if not isinstance(message, dict):
            return {"error": "action_service request is not an object"}
        call_id = message.get("id")
        try:
            result = await self._handle(message)
        except EngineError as exc:
            return {"id": call_id, "error": str(exc)}
        except Exception as exc:  # never let a hostile request end the worker's run badly
            log.exception("action_service request failed")
            return {"id": call_id, "error": f"{type(exc).__name__}: {exc}"}
        return {"id": call_id, "result": result}

    async def _handle(self, message: dict[str, Any]) -> Any:
        op = message.get("op")
        if op == "kv":
            if self._request.datastore is None:
                raise EngineError("this worker offers actions no datastore")
            args = message.get("args")
            if not isinstance(args, dict):
                raise EngineError("action_service datastore call without arguments")
            return await self._request.datastore(message.get("class"), message.get("method"), args)
        if op == "dispatch":
            if self._request.dispatch_trigger is None:
                raise EngineError("this worker cannot dispatch trigger instances")
            trigger = message.get("trigger")
            trace_tag = message.get("trace_tag")
            if not isinstance(trigger, str) or not trigger:
                raise EngineError("dispatch_trigger needs a trigger type ref")
            if trace_tag is not None and not isinstance(trace_tag, str):
                raise EngineError("dispatch_trigger: trace_tag must be a string")
            payload = message.get("payload")
            return await self._request.dispatch_trigger(
                trigger, {} if payload is None else payload, trace_tag
            )
        raise EngineError(f"unknown action_service request {str(op)[:40]!r}")


async def _lines(reader: asyncio.StreamReader) -> AsyncIterator[bytes | None]:
    """The request lines; None for one over MAX_REQUEST_BYTES, read past and dropped
    (never held whole) so that the next request is read as it should be."""
    pending = bytearray()
    oversized = False
    while chunk := await reader.read(_READ_CHUNK):
        searched = len(pending)  # only the new bytes can hold the next newline
        pending += chunk
        while (end := pending.find(b"\n", searched)) >= 0:
            line = bytes(pending[:end])
            del pending[: end + 1]
            searched = 0
            yield None if oversized else line
            oversized = False
        if len(pending) > MAX_REQUEST_BYTES:
            oversized = True
            pending.clear()


async def _write(writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
    writer.write(json.dumps(reply, default=str).encode() + b"\n")
    await writer.drain()
