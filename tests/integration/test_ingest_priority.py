"""Rules yield to ingest in one process, yet keep moving and catch up (engine.ingest.pressure)."""

from __future__ import annotations

import asyncio
import time

from aiohttp.test_utils import TestClient, TestServer

from engine.http.app import create_app
from tests.support.app import settings_for
from tests.support.packs import noop_rule


async def _count(client: TestClient, status: str) -> int:
    response = await client.get(f"/api/v1/triggerinstances?status={status}&limit=1")
    return int(response.headers["X-Total-Count"])


async def test_rules_keep_moving_under_a_stream_of_webhooks_and_catch_up(tmp_path) -> None:
    async with TestClient(
        TestServer(
            create_app(
                settings_for(tmp_path, rules={"any": noop_rule("anything")}, roles=("api", "rules"))
            )
        )
    ) as client:
        processed_while_posting = 0
        sent = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            answers = await asyncio.gather(
                *(client.post("/webhooks/anything", json={"n": sent + i}) for i in range(16))
            )
            assert all(answer.status == 202 for answer in answers)
            sent += len(answers)
            processed_while_posting = await _count(client, "processed")
        # Webhooks kept arriving the whole time, and rules still made progress.
        assert processed_while_posting > 0
        for _ in range(500):
            if await _count(client, "processed") == sent:
                break
            await asyncio.sleep(0.02)
        assert await _count(client, "processed") == sent
        assert await _count(client, "pending") == 0
