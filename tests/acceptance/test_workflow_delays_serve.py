"""An Orquesta task's `delay` and a retry's `delay` survive a crash: a real `hookyard
serve` killed with SIGKILL while a task waits out its delay, and again while a retry
waits out its own, is restarted; each delayed run happens once, and not before its time
(the wait is the child execution's stored `run_after`, not a timer in memory). On a
SQLite file and on PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from tests.support.packs import write_pack
from tests.support.postgres import admin, database_url, server_url
from tests.support.serve import ServeLauncher

pytestmark = [pytest.mark.slow]

ROLES = "api,actions,workflows"
DELAY = 3
PACK = {
    "actions/waits.yaml": """\
        name: waits
        runner_type: orquesta
        entry_point: workflows/waits.yaml
        parameters:
          flag: {type: string, required: true}
        """,
    "actions/workflows/waits.yaml": f"""\
        version: 1.0
        input:
          - flag
        tasks:
          first:
            action: core.noop
            next:
              - do: later
          later:
            delay: {DELAY}
            action: core.noop
            next:
              - do: flaky
          flaky:
            action: core.local
            input:
              cmd: test -f <% ctx(flag) %>
            retry:
              count: 2
              delay: {DELAY}
        output:
          - done: true
        """,
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'delays.db'}"
        return
    server = server_url()
    name = f"hookyard_delays_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin(server, f'CREATE DATABASE "{name}"'))
    try:
        yield database_url(server, name)
    finally:
        asyncio.run(admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def tasks(base: str, workflow_id: str) -> list[dict]:
    async with aiohttp.ClientSession() as session:
        url = f"{base}/api/v1/executions/{workflow_id}/children"
        async with session.get(url) as response:
            assert response.status == 200, await response.text()
            return await response.json()


def named(children: list[dict], task: str) -> list[dict]:
    found = [c for c in children if c["context"]["orquesta"]["task_name"] == task]
    return sorted(found, key=lambda c: c["start_timestamp"])


def wait_for(check, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = asyncio.run(check())
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def waited(child: dict) -> float:
    """Seconds between the task run's request and its start."""
    requested = datetime.fromisoformat(child["start_timestamp"].replace("Z", "+00:00"))
    started = datetime.fromisoformat(child["started_at"].replace("Z", "+00:00"))
    return (started - requested).total_seconds()


def test_task_and_retry_delays_survive_kill_9(
    serve: ServeLauncher, tmp_path: Path, store_url: str
) -> None:
    packs = tmp_path / "packs"
    write_pack(packs, "d", PACK)
    flag = tmp_path / "flag"
    env = {"HOOKYARD_PACKS_DIRS": f"[{packs}]", "HOOKYARD_AUTH__ENABLED": "false"}
    first = serve.start(store=store_url, roles=ROLES, env=env)

    async def start() -> str:
        async with aiohttp.ClientSession() as session:
            body = {"action": "d.waits", "parameters": {"flag": str(flag)}}
            async with session.post(f"{first.url}/api/v1/executions", json=body) as response:
                assert response.status == 201, await response.text()
                return (await response.json())["id"]

    workflow_id = asyncio.run(start())

    async def later_waiting() -> bool:
        return bool(named(await tasks(first.url, workflow_id), "later"))

    wait_for(later_waiting, "the delayed task requested")
    first.kill()  # while `later` waits out its delay

    second = serve.start(store=store_url, roles=ROLES, env=env)

    async def retry_waiting() -> bool:
        runs = named(await tasks(second.url, workflow_id), "flaky")
        return len(runs) == 2 and runs[0]["status"] == "failed"

    wait_for(retry_waiting, "the retry requested")
    flag.touch()
    second.kill()  # while the retry waits out its delay

    third = serve.start(store=store_url, roles=ROLES, env=env)

    async def ended() -> dict | None:
        async with aiohttp.ClientSession() as session:
            url = f"{third.url}/api/v1/executions/{workflow_id}"
            async with session.get(url) as response:
                data = await response.json()
                return data if data["status"] in ("succeeded", "failed") else None

    workflow = wait_for(ended, "the workflow to end", timeout=60)
    assert workflow["status"] == "succeeded", (workflow["result"], third.log_tail())
    children = asyncio.run(tasks(third.url, workflow_id))
    [later] = named(children, "later")
    failed_try, retried = named(children, "flaky")
    assert (later["status"], failed_try["status"], retried["status"]) == (
        "succeeded",
        "failed",
        "succeeded",
    )
    assert len(children) == 4  # first, later, two runs of flaky: none lost, none twice
    assert waited(later) >= DELAY - 0.1
    assert waited(retried) >= DELAY - 0.1
