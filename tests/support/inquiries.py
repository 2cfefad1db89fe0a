"""Inquiries in tests: StackStorm's inquiry examples as a pack, and waiting on them."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

ST2_ASK_PACK = Path(__file__).parent / "st2_ask" / "examples"
ENDED = ("succeeded", "failed", "canceled", "timeout", "abandoned")


def copy_ask_examples(packs_dir: Path) -> Path:
    """StackStorm's inquiry examples, unchanged, as the pack `examples` in `packs_dir`."""
    target = packs_dir / "examples"
    shutil.copytree(ST2_ASK_PACK, target)
    return target


async def wait_status(client: Any, execution_id: str, wanted: tuple[str, ...], timeout=30.0):
    """The execution (API shape) once its status is one of `wanted` (or ended); the last
    seen when `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        reply = await client.get(f"/api/v1/executions/{execution_id}")
        data = await reply.json()
        if data["status"] in wanted or data["status"] in ENDED:
            return data
        if time.monotonic() > deadline:
            return data
        await asyncio.sleep(0.02)


async def wait_inquiries(client: Any, count: int, timeout: float = 30.0) -> list[dict]:
    """The pending inquiries once there are `count` (the last list seen otherwise)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = await client.get("/api/v1/inquiries")
        found = await reply.json()
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.02)
