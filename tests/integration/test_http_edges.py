"""The HTTP server's edges against raw sockets, on 127.0.0.1, run as `hookyard serve` runs
the app (engine.http.header_timeout.HeaderTimeoutRunner): `Expect: 100-continue` over the
body limit (issue 15 item 11c) and clients that send their headers slowly (item 11e).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from engine.config import ServerSettings, Settings
from engine.http.app import create_app
from engine.http.header_timeout import HeaderTimeoutRunner
from tests.support.app import settings_for
from tests.support.packs import noop_rule

HOOK_RULE = noop_rule("hook", "catch_all")
HEADER_TIMEOUT = 2.0
FIVE_MB = 5 * 1024 * 1024


def edges_settings(tmp_path: Path) -> Settings:
    return settings_for(
        tmp_path,
        rules={"hook": HOOK_RULE},
        server=ServerSettings(header_timeout=HEADER_TIMEOUT),
    )


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    """The app served as engine.http.server serves it, on a free port of 127.0.0.1."""
    settings = edges_settings(tmp_path)
    runner = HeaderTimeoutRunner(
        create_app(settings),
        header_timeout=settings.server.header_timeout,
        access_log=None,
        shutdown_timeout=2,
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield "127.0.0.1", runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def read_head(reader: asyncio.StreamReader, timeout: float = 10) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await read_head(reader)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head, await asyncio.wait_for(reader.readexactly(length), 10)


# --- item 11c: Expect: 100-continue ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/webhooks/hook"), ("PUT", "/api/v1/keys/k")]
)
async def test_expect_continue_over_the_limit_is_413_without_100(server, method, path):
    reader, writer = await asyncio.open_connection(*server)
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {FIVE_MB}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 413 "), head  # not "100 Continue" first
        assert b"over the limit of 1048576 bytes" in body
    finally:
        writer.close()


async def test_expect_continue_within_the_limit_gets_100_then_the_answer(server):
    reader, writer = await asyncio.open_connection(*server)
    try:
        body = b'{"a": 1}'
        writer.write(
            b"POST /webhooks/hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body)
        )
        assert (await read_head(reader)).startswith(b"HTTP/1.1 100 Continue")
        writer.write(body)
        head, _ = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 202 "), head
    finally:
        writer.close()


# --- item 11e: slow request headers -----------------------------------------------------------


async def send_slowly(writer: asyncio.StreamWriter, data: bytes, pause: float) -> bool:
    """Send `data` a byte at a time; False when the server closed the connection first."""
    try:
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(pause)
    except ConnectionError:
        return False
    return True


async def test_slow_headers_are_cut_while_other_requests_are_served(server):
    host, port = server
    reader, writer = await asyncio.open_connection(host, port)
    head = b"POST /webhooks/hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" * 5
    sending = asyncio.create_task(send_slowly(writer, head, 0.2))
    # Read from the start: once the sender's next byte hits the closed connection, the
    # stream raises instead of returning what it received.
    answering = asyncio.create_task(reader.read(4096))
    started = time.monotonic()
    try:
        async with aiohttp.ClientSession() as session:
            while not sending.done() and time.monotonic() - started < 3 * HEADER_TIMEOUT:
                async with session.get(f"http://{host}:{port}/health") as response:
                    assert response.status == 200
                await asyncio.sleep(0.2)
        answer = await asyncio.wait_for(answering, 20)
        elapsed = time.monotonic() - started
    finally:
        sending.cancel()
        answering.cancel()
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"server.header_timeout" in answer
    assert HEADER_TIMEOUT * 0.9 <= elapsed < HEADER_TIMEOUT + 15


async def test_an_idle_keep_alive_connection_and_a_slow_body_are_not_cut(server):
    reader, writer = await asyncio.open_connection(*server)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _ = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200 ")
        await asyncio.sleep(HEADER_TIMEOUT * 1.5)  # idle between requests: not timed
        body = b'{"slow": "body"}'
        writer.write(
            b"POST /webhooks/hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        assert await send_slowly(writer, body, HEADER_TIMEOUT * 1.5 / len(body))  # not timed
        head, _ = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 202 "), head
        # The same connection's next request headers are timed again.
        sending = asyncio.create_task(send_slowly(writer, b"GET /health HTTP/1.1\r\n" * 9, 0.3))
        answer = await asyncio.wait_for(reader.read(4096), 20)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert await sending is False
    finally:
        writer.close()
