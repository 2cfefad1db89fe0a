"""Polling the API until a trigger instance or an execution is done.

`http` is a test client (paths relative to its server) or an aiohttp ClientSession with
`base` the server's URL. The timeouts are generous bounds for a loaded machine, not timing
assertions: a test that needs a tighter one passes it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from engine.model.records import PROCESSED, PROCESSING_FAILED

INSTANCE_DONE = (PROCESSED, PROCESSING_FAILED)
EXECUTION_DONE = ("succeeded", "failed", "timeout", "abandoned")
POLL_EVERY = 0.03


async def get_json(http: Any, url: str, **params: Any) -> Any:
    async with http.get(url, params=params or None) as response:
        assert response.status == 200, f"{url}: {response.status} {await response.text()}"
        return await response.json()


async def wait_processed(
    http: Any, instance_id: str, *, base: str = "", timeout: float = 30.0
) -> dict:
    """The trigger instance once the rules worker is done with it (processed or failed)."""
    url = f"{base}/api/v1/triggerinstances/{instance_id}"
    deadline = time.monotonic() + timeout
    while True:
        instance = await get_json(http, url)
        if instance["status"] in INSTANCE_DONE:
            return instance
        assert time.monotonic() < deadline, f"{instance_id} still {instance['status']}"
        await asyncio.sleep(POLL_EVERY)


async def wait_execution(
    http: Any,
    execution_id: str | None = None,
    *,
    statuses: Sequence[str] = EXECUTION_DONE,
    base: str = "",
    timeout: float = 30.0,
    **filters: Any,
) -> dict:
    """The execution `execution_id`, or else the newest one listed for `filters` (e.g.
    trigger_instance=...), once its status is one of `statuses`."""
    deadline = time.monotonic() + timeout
    while True:
        if execution_id is not None:
            found = [await get_json(http, f"{base}/api/v1/executions/{execution_id}")]
        else:
            found = await get_json(http, f"{base}/api/v1/executions", **filters)
        if found and found[0]["status"] in statuses:
            return found[0]
        assert time.monotonic() < deadline, (
            f"no execution {execution_id or filters} in {tuple(statuses)}: {found}"
        )
        await asyncio.sleep(POLL_EVERY)


async def wait_until(
    check: Callable[[], Any | Awaitable[Any]],
    what: str,
    timeout: float = 10.0,
    *,
    every: float = 0.005,
) -> Any:
    """Poll `check` (sync or async) every `every` seconds until it returns something
    truthy, and return that; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(every)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """The blocking form of wait_until, for tests outside an event loop: polls `check`
    every 0.1 s until it returns something truthy, and returns that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.1)


async def wait_explained_tasks(http: Any, instance_id: str, count: int) -> tuple[dict, list]:
    """Poll the trigger instance's explain report until the workflow (or chain) its first
    candidate rule started shows `count` task runs, all succeeded: (execution, tasks)."""

    async def explained() -> tuple[dict, list] | None:
        report = await get_json(http, f"/api/v1/triggerinstances/{instance_id}/explain")
        execution = (report.get("candidates") or [{}])[0].get("execution") or {}
        tasks = execution.get("tasks") or []
        done = len(tasks) == count and all(t["status"] == "succeeded" for t in tasks)
        return (execution, tasks) if done else None

    return await wait_until(
        explained, f"{count} succeeded task runs in the explain report", 30, every=0.05
    )
