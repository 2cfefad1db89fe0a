"""Streams of load webhooks posted to real serve processes, and counting what they stored
(the load rule is LOAD_RULE in tests/support/serve.py)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

CONCURRENCY = 16
DRAIN_TIMEOUT = 30.0


@dataclass
class StreamResult:
    accepted: dict[int, str] = field(default_factory=dict)  # n -> trigger instance id
    unanswered: set[int] = field(default_factory=set)  # connection lost, no status
    refused: dict[int, int] = field(default_factory=dict)  # n -> HTTP status other than 202

    @property
    def posted(self) -> set[int]:
        return set(self.accepted) | self.unanswered | set(self.refused)


async def post_stream(
    session: aiohttp.ClientSession,
    urls: list[str],
    *,
    webhook: str,
    pad: str,
    max_requests: int,
    stop_when: Callable[[StreamResult], bool] = lambda result: False,
    on_stop: Callable[[], None] = lambda: None,
) -> StreamResult:
    """Post {"kind": "load", "n": n, "pad": pad} for n = 0, 1, ... from CONCURRENCY tasks,
    round-robin over `urls`, until max_requests are sent or `stop_when` holds (then
    `on_stop()` runs once, e.g. a SIGKILL, and the tasks finish their current request)."""
    result = StreamResult()
    numbers = itertools.count()
    stopped = False

    async def client() -> None:
        nonlocal stopped
        while not stopped:
            n = next(numbers)
            if n >= max_requests:
                return
            url = f"{urls[n % len(urls)]}/webhooks/{webhook}"
            try:
                async with session.post(url, json={"kind": "load", "n": n, "pad": pad}) as resp:
                    if resp.status == 202:
                        result.accepted[n] = (await resp.json())["id"]
                    else:
                        result.refused[n] = resp.status
            except (aiohttp.ClientError, TimeoutError):
                result.unanswered.add(n)
            if not stopped and stop_when(result):
                stopped = True
                on_stop()

    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return result


async def list_all(session: aiohttp.ClientSession, url: str, **filters: str) -> list[dict]:
    """Every record of an API list (limit=-1), checked against X-Total-Count."""
    async with session.get(url, params={"limit": "-1", **filters}) as response:
        assert response.status == 200, await response.text()
        items = await response.json()
        assert int(response.headers["X-Total-Count"]) == len(items), url
        return items


async def count(session: aiohttp.ClientSession, url: str, **filters: str) -> int:
    async with session.get(url, params={"limit": "1", **filters}) as response:
        assert response.status == 200, await response.text()
        return int(response.headers["X-Total-Count"])


async def wait_drained(session: aiohttp.ClientSession, base: str) -> None:
    """Until no trigger instance is pending or processing."""
    url = base + "/api/v1/triggerinstances"
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while True:
        left = {s: await count(session, url, status=s) for s in ("pending", "processing")}
        if not any(left.values()):
            return
        assert time.monotonic() < deadline, f"not drained after {DRAIN_TIMEOUT} s: {left}"
        await asyncio.sleep(0.1)
