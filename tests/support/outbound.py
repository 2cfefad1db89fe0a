"""Outbound webhook test parts: a real receiver on loopback, the app's settings for it,
and waiting for a subscription's deliveries through the API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from engine.config import Settings
from tests.support.app import quick_outbound, settings_for

# POST /webhooks/in runs core.noop: the events of a whole rule run.
IN_RULE = """\
name: on_in
pack: t
trigger: {type: core.st2.webhook, parameters: {url: in}}
action: {ref: core.noop}
"""

Behaviour = Callable[[web.Request, bytes], Any]


class Receiver:
    """A real HTTP server on 127.0.0.1; `behaviours[n]` answers request n (the last repeats)."""

    def __init__(self, behaviours: list[Behaviour]) -> None:
        self.behaviours = behaviours
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.verified: list[dict] = []
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        behaviour = self.behaviours[min(len(self.requests), len(self.behaviours)) - 1]
        return await behaviour(request, body)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.close()

    def url(self, path: str = "/hook") -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}{path}"


def answer(status: int) -> Behaviour:
    async def respond(request: web.Request, body: bytes) -> web.Response:
        return web.Response(status=status, text=f"answer {status}")

    return respond


def hang(seconds: float) -> Behaviour:
    async def respond(request: web.Request, body: bytes) -> web.Response:
        await asyncio.sleep(seconds)
        return web.Response(status=200)

    return respond


def outbound_settings(tmp_path: Path, **outbound: Any) -> Settings:
    return settings_for(
        tmp_path,
        rules={"in": IN_RULE},
        roles=("api", "rules", "actions", "deliveries"),
        outbound=quick_outbound(tmp_path, **outbound),  # auth off: admin-only routes
    )


async def subscribe(client: TestClient, **body: Any) -> dict:
    response = await client.post("/api/v1/events/webhooks", json=body)
    assert response.status == 201, await response.text()
    return await response.json()


async def wait_deliveries(
    client: TestClient, subscription_id: str, done: Callable[[list[dict]], bool]
) -> list[dict]:
    # Generous bound for a loaded machine; not a timing assertion.
    for _ in range(600):
        response = await client.get("/api/v1/deliveries", params={"subscription": subscription_id})
        items = await response.json()
        if done(items):
            return items
        await asyncio.sleep(0.05)
    raise AssertionError(f"deliveries of {subscription_id} never got there: {items}")


def finished(items: list[dict]) -> bool:
    return bool(items) and all(d["status"] in ("succeeded", "failed") for d in items)
