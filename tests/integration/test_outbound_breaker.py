"""The circuit breaker and rate limit of outbound subscriptions (issue 23), end to end: the
real app and deliveries worker, a real SQLite file, a real receiver on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from aiohttp import web

from tests.support.app import REPO_ROOT, app_client
from tests.support.outbound import (
    Receiver,
    answer,
    finished,
    outbound_settings,
    subscribe,
    wait_deliveries,
)

COOLDOWN = 1.5


def _cli(client, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKYARD_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    url = str(client.make_url("")).rstrip("/")
    return subprocess.run(
        [sys.executable, "-m", "engine", *args, "--url", url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


async def test_a_tripped_circuit_holds_deliveries_then_one_probe_closes_it(tmp_path: Path):
    arrivals: list[float] = []
    healthy = asyncio.Event()

    async def recorded(request: web.Request, body: bytes) -> web.Response:
        arrivals.append(time.monotonic())
        return web.Response(status=200 if healthy.is_set() else 503)

    settings = outbound_settings(
        tmp_path,
        breaker_threshold=3,
        breaker_cooldown=COOLDOWN,
        retry_schedule=("0s", "0.1s", "0.1s", "0.1s", "0.1s", "0.1s"),
        per_subscription_concurrency=1,
    )
    async with Receiver([recorded]) as receiver, app_client(settings) as client:
        sub = await subscribe(client, url=receiver.url(), events=["trigger_instance.created"])
        for _ in range(4):
            await client.post("/webhooks/in", json={})

        async def state() -> dict:
            response = await client.get(f"/api/v1/events/webhooks/{sub['id']}")
            return (await response.json())["circuit"]

        # Three failures in a row trip it: nothing more is sent during the cooldown.
        for _ in range(200):
            if (await state())["state"] == "open":
                break
            await asyncio.sleep(0.05)
        tripped = await state()
        assert tripped["state"] == "open" and tripped["consecutiveFailures"] == 3
        sent_when_tripped = len(arrivals)
        assert sent_when_tripped == 3
        healthy.set()
        await asyncio.sleep(COOLDOWN / 2)
        assert len(arrivals) == sent_when_tripped  # held, not spending attempts

        items = await wait_deliveries(client, sub["id"], finished)
        closed = await state()
    assert closed == {"state": "closed", "consecutiveFailures": 0, "openUntil": None}
    assert {d["status"] for d in items} == {"succeeded"}
    # The probe went only after the cooldown, and no delivery burned its attempts.
    assert arrivals[3] - arrivals[2] >= COOLDOWN * 0.9
    assert max(d["attempts"] for d in items) <= 3 and sum(d["attempts"] for d in items) == 7


async def test_a_circuit_is_closed_by_hand_and_its_state_is_checked(tmp_path: Path):
    settings = outbound_settings(tmp_path, breaker_threshold=1, breaker_cooldown=3600)
    async with Receiver([answer(500)]) as receiver, app_client(settings) as client:
        sub = await subscribe(client, url=receiver.url(), events=["trigger_instance.created"])
        await client.post("/webhooks/in", json={})
        url = f"/api/v1/events/webhooks/{sub['id']}"
        for _ in range(200):
            if (await (await client.get(url)).json())["circuit"]["state"] == "open":
                break
            await asyncio.sleep(0.05)
        # Visible in /metrics (beside a subscription that never failed) and through the
        # CLI, which closes it by hand.
        quiet = await subscribe(client, url=receiver.url(), events=["rule.enforced"])
        metrics = await (await client.get("/metrics")).text()
        assert f'hookyard_subscription_circuit_open{{subscription="{sub["id"]}"}} 1.0' in metrics
        assert f'hookyard_subscription_circuit_open{{subscription="{quiet["id"]}"}} 0.0' in metrics
        listed = await asyncio.to_thread(_cli, client, "subscription", "list", "--json")
        [shown] = [s for s in json.loads(listed.stdout) if s["id"] == sub["id"]]
        assert shown["circuit"]["state"] == "open", listed.stderr
        closed_by_cli = await asyncio.to_thread(
            _cli, client, "subscription", "close-circuit", sub["id"]
        )
        assert closed_by_cli.stdout.strip() == f"{sub['id']} circuit closed", closed_by_cli.stderr
        refused = await client.patch(url, json={"circuit": "open"})
        assert refused.status == 400
        assert "'circuit' can only be set to 'closed'" in (await refused.json())["faultstring"]
        for bad in (-1, 0.05, 20_000, "fast", True):
            response = await client.patch(url, json={"rateLimit": bad})
            assert response.status == 400, bad
            assert "'rateLimit'" in (await response.json())["faultstring"]


async def test_a_rate_limited_subscription_is_sent_no_faster_than_its_rate(tmp_path: Path):
    arrivals: list[float] = []

    async def recorded(request: web.Request, body: bytes) -> web.Response:
        arrivals.append(time.monotonic())
        return web.Response(status=204)

    settings = outbound_settings(tmp_path, per_subscription_concurrency=8)
    async with Receiver([recorded]) as receiver, app_client(settings) as client:
        sub = await subscribe(
            client, url=receiver.url(), events=["trigger_instance.created"], rateLimit=4
        )
        assert sub["rateLimit"] == 4
        for _ in range(12):
            await client.post("/webhooks/in", json={})
        items = await wait_deliveries(client, sub["id"], lambda i: len(i) == 12 and finished(i))
    assert {d["status"] for d in items} == {"succeeded"}
    # A burst of one second's worth (4), then 4 a second: 12 take at least 2 s, and no
    # stretch of time holds more sends than the burst plus the rate times its length.
    assert arrivals[-1] - arrivals[0] >= 1.8
    for i, first in enumerate(arrivals):
        for j in range(i + 1, len(arrivals)):
            assert j - i + 1 <= 4 + 4 * (arrivals[j] - first) + 0.5, (i, j)
