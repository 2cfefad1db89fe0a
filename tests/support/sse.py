"""Reading Server-Sent Events from /api/v1/stream (and a raw-socket client that reads
slowly, for the slow-client tests)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

EVENT_TIMEOUT = 20.0


@dataclass(frozen=True)
class Event:
    name: str
    data: Any  # the JSON of `data:`, or its text when it is not JSON
    id: str | None


def parse_block(block: str) -> Event | None:
    """One event from the lines between two blank lines (None for comments only)."""
    name, data, event_id = "message", [], None
    for line in block.split("\n"):
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
    if not data:
        return None
    text = "\n".join(data)
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        parsed = text
    return Event(name, parsed, event_id)


async def events_of(response: aiohttp.ClientResponse) -> AsyncIterator[Event]:
    buffer = ""
    async for chunk in response.content.iter_any():
        buffer += chunk.decode()
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            event = parse_block(block)
            if event is not None:
                yield event


async def collect_until(
    response: aiohttp.ClientResponse,
    done: Callable[[list[Event]], bool],
    timeout: float = EVENT_TIMEOUT,
) -> list[Event]:
    """Events read until `done(events)` holds (or the stream ends); fails on timeout."""
    seen: list[Event] = []

    async def read() -> None:
        async for event in events_of(response):
            seen.append(event)
            if done(seen):
                return

    try:
        await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise AssertionError(
            f"stream: condition not met after {timeout} s; got {[(e.name, e.data) for e in seen]}"
        ) from None
    return seen


def raw_request(host: str, port: int, path: str, receive_buffer: int = 4096) -> socket.socket:
    """A GET sent on a socket with a small receive buffer that the caller reads (or not)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect((host, port))
    # HTTP/1.0: the body comes unchunked, events as written.
    sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: */*\r\n\r\n".encode())
    return sock


def read_all(sock: socket.socket, timeout: float) -> bytes:
    """Everything until the server closes (or `timeout` of silence)."""
    sock.settimeout(timeout)
    received = bytearray()
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        pass
    return bytes(received)
