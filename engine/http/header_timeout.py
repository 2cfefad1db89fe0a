"""A time limit on reading a request's headers (slowloris), which aiohttp does not have.

aiohttp closes a connection that is idle between requests after its keepalive_timeout
(over an hour by default), but a client sending a request's headers one byte a second
is not idle: it could hold a connection, and with many of them every file descriptor,
for as long as it liked. `HeaderTimeoutRunner` serves the app like web.AppRunner, and
wraps each connection's aiohttp protocol (RequestHandler) in `_HeaderDeadline`, which
starts a timer at the first byte of a request's headers and stops it when aiohttp has
parsed them; when it fires first, the client gets `408 Request Timeout` (unless a
response is under way) and the connection is closed. Body bytes and the wait for a
response are never timed: the timer starts only while no request's body is due.

One limit: bytes that end one request's body and begin the next request's headers in
the same read start the timer only at the next read (a client that then goes silent is
idle, for keepalive_timeout to close).

The wrapper reads four of RequestHandler's attributes (_request_count, _messages,
_request_in_progress, _upgraded); tests/integration/test_http_edges.py fails if an
aiohttp release changes them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)


def _timeout_response(timeout: float) -> bytes:
    body = json.dumps(
        {
            "faultstring": f"request headers not received within {timeout:g} s "
            "(server.header_timeout)"
        }
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class HeaderTimeoutRunner(web.AppRunner):
    """web.AppRunner whose connections get `header_timeout` seconds per request's headers."""

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.header_timeout = header_timeout
        self._connections: _Connections | None = None

    @property
    def server(self) -> Any:
        """What sites create connections with: the aiohttp server's protocols, wrapped."""
        server = super().server
        if server is None:
            return None
        if self._connections is None or self._connections.server is not server:
            self._connections = _Connections(server, self.header_timeout)
        return self._connections


class _Connections:
    """The protocol factory sites get: aiohttp's web.Server, each protocol wrapped."""

    def __init__(self, server: web.Server, timeout: float) -> None:
        self.server = server
        self._timeout = timeout
        self._response = _timeout_response(timeout)

    def __call__(self) -> asyncio.Protocol:
        return _HeaderDeadline(self.server(), self._timeout, self._response)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.server, name)


class _HeaderDeadline(asyncio.Protocol):
    """One connection: aiohttp's protocol, and a timer on each request's headers."""

    def __init__(self, handler: Any, timeout: float, response: bytes) -> None:
        self._handler = handler
        self._timeout = timeout
        self._response = response
        self._timer: asyncio.TimerHandle | None = None
        # The body of the latest request whose headers were parsed: while it is not at
        # its end, bytes received are body bytes.
        self._body: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._handler.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()

    def eof_received(self) -> bool | None:
        return self._handler.eof_received()

    def data_received(self, data: bytes) -> None:
        handler = self._handler
        in_headers = self._body is None or self._body.is_eof()
        parsed = handler._request_count
        handler.data_received(data)
        if handler._request_count != parsed:  # a request's headers are complete
            self._stop()
            messages = handler._messages
            self._body = messages[-1][1] if messages else None
        elif in_headers and data and self._timer is None and not handler._upgraded:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._timeout, self._expire)

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        handler = self._handler
        transport = handler.transport
        if transport is None:
            return
        log.info(
            "closed a connection whose request headers took over %g s (server.header_timeout)",
            self._timeout,
            extra={"peer": str(handler.peername)},
        )
        if not handler._request_in_progress and not handler._messages:
            transport.write(self._response)
        handler.force_close()
