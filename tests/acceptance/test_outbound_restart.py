"""A retry scheduled before `hookyard serve` is killed (SIGKILL) is sent after a restart."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.serve import ServeLauncher, serve_environment

OUTBOUND_ENV = {
    "HOOKYARD_OUTBOUND__ALLOW_PRIVATE": "[127.0.0.1/32]",
    # The retry comes due 3 s after the first failure: the kill and restart fall between.
    "HOOKYARD_OUTBOUND__RETRY_SCHEDULE": "[0s, 3s]",
    "HOOKYARD_OUTBOUND__RETRY_JITTER": "0",
}


async def api(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> Any:
    async with session.request(method, url, **kwargs) as response:
        assert response.status < 300, await response.text()
        return await response.json()


async def wait_delivery(session, base_url: str, done) -> dict:
    # Generous bound for a loaded machine; not a timing assertion.
    for _ in range(400):
        items = await api(session, "GET", f"{base_url}/api/v1/deliveries")
        if items and done(items[0]):
            return items[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"delivery never got there: {items}")


async def test_retry_happens_after_the_engine_is_killed_between_attempts(
    serve: ServeLauncher,
) -> None:
    seen: list[bytes] = []

    async def receive(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.Response(status=500 if len(seen) == 1 else 200)

    app = web.Application()
    app.router.add_post("/hook", receive)
    receiver = TestServer(app, host="127.0.0.1")
    await receiver.start_server()
    roles = "api,rules,deliveries"
    try:
        first = await asyncio.to_thread(serve.start, roles=roles, env=OUTBOUND_ENV)
        async with aiohttp.ClientSession() as session:
            await api(
                session,
                "POST",
                f"{first.url}/api/v1/events/webhooks",
                json={
                    "url": f"http://127.0.0.1:{receiver.port}/hook",
                    "events": ["trigger_instance.created"],
                },
            )
            await api(session, "POST", f"{first.url}/webhooks/load", json={"kind": "x", "pad": "b"})
            failed_once = await wait_delivery(
                session, first.url, lambda d: d["attempts"] == 1 and d["status"] == "pending"
            )
            assert failed_once["lastStatusCode"] == 500
            await asyncio.to_thread(first.kill)

            second = await asyncio.to_thread(serve.start, roles=roles, env=OUTBOUND_ENV)
            # Wait for a final status: "delivering" (claimed, in flight) is not an outcome.
            delivered = await wait_delivery(
                session, second.url, lambda d: d["status"] in ("succeeded", "failed")
            )
            listed = await asyncio.to_thread(cli, "delivery", "list", "--json", "--url", second.url)
            again = await asyncio.to_thread(
                cli, "delivery", "redeliver", delivered["id"], "--url", second.url
            )
            await wait_delivery(session, second.url, lambda d: d["redeliveryOf"] is not None)
    finally:
        await receiver.close()

    assert delivered["id"] == failed_once["id"]
    assert delivered["status"] == "succeeded" and delivered["attempts"] == 2
    assert [a["status_code"] for a in delivered["attemptLog"]] == [500, 200]
    assert len(seen) >= 2 and seen[0] == seen[1]  # the same event, byte for byte
    assert [d["id"] for d in json.loads(listed)] == [delivered["id"]]
    assert again.startswith("redelivery ") and "(sequence 2)" in again


def cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "engine", *args],
        env=serve_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
