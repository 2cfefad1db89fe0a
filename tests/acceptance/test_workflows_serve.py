"""Orquesta workflows in a real `hookyard serve`: killed with SIGKILL in the middle of a
workflow and restarted, it finishes the workflow and runs no task twice — on a SQLite
file and on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest

from tests.support.app import REPO_ROOT as ROOT
from tests.support.serve import ServeLauncher
from tests.support.workflow_pack import write_workflow_pack

ROLES = "api,actions,workflows"
ENDED = ("succeeded", "failed", "canceled", "timeout", "abandoned")


@contextlib.contextmanager
def fresh_pg_database() -> Iterator[str]:
    server = os.environ.get("HOOKYARD_TEST_PG")
    if not server:
        pytest.skip("HOOKYARD_TEST_PG is not set")
    name = f"hookyard_wf_{uuid.uuid4().hex[:12]}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(server)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'workflows.db'}"
        return
    with fresh_pg_database() as url:
        yield url


async def get(session: aiohttp.ClientSession, url: str, **params) -> object:
    async with session.get(url, params=params) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_workflow_killed_mid_way_finishes_after_a_restart_running_no_task_twice(
    serve: ServeLauncher, tmp_path: Path, store_url: str
) -> None:
    packs = tmp_path / "packs"
    write_workflow_pack(packs)
    # Short leases: the task cut short by the kill is claimed again soon after the restart.
    env = {"HOOKYARD_PACKS_DIRS": f"[{packs}]", "HOOKYARD_WORKERS__LEASE_SECONDS": "3"}
    first = serve.start(store=store_url, roles=ROLES, env=env)

    async def start_and_kill() -> str:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{first.url}/api/v1/executions", json={"action": "flows.slow8"}
            ) as response:
                assert response.status == 201, await response.text()
                workflow_id = (await response.json())["id"]

            async def three_done() -> bool:
                children = await get(
                    session, f"{first.url}/api/v1/executions/{workflow_id}/children"
                )
                return sum(c["status"] == "succeeded" for c in children) >= 3

            await wait_for(three_done, 30, "three tasks done")
        return workflow_id

    workflow_id = asyncio.run(start_and_kill())
    first.kill()
    second = serve.start(store=store_url, roles=ROLES, env=env)

    async def finish() -> tuple[dict, list[dict]]:
        async with aiohttp.ClientSession() as session:
            url = f"{second.url}/api/v1/executions/{workflow_id}"

            async def ended() -> dict | None:
                data = await get(session, url)
                return data if data["status"] in ENDED else None

            workflow = await wait_for(ended, 60, "the workflow to end")
            children = await get(session, f"{url}/children", depth=-1)
            return workflow, children

    workflow, children = asyncio.run(finish())
    assert workflow["status"] == "succeeded", (workflow["result"], second.log_tail())
    assert workflow["result"] == {"output": {"greeting": "world"}}
    names = [c["context"]["orquesta"]["task_name"] for c in children]
    # One task run per task: none lost, none requested twice. (A task cut short by the
    # kill is the same execution's second attempt, not a second run of the task.)
    assert sorted(names) == sorted(f"task{n}" for n in range(1, 9))
    assert all(c["status"] == "succeeded" for c in children), children


@pytest.mark.postgres
def test_two_serve_processes_on_one_postgresql_step_each_workflow_once(
    serve: ServeLauncher, tmp_path: Path
) -> None:
    packs = tmp_path / "packs"
    write_workflow_pack(packs)
    env = {"HOOKYARD_PACKS_DIRS": f"[{packs}]"}
    with fresh_pg_database() as url:
        one = serve.start(store=url, roles=ROLES, env=env, name="one")
        two = serve.start(store=url, roles=ROLES, env=env, name="two")

        async def run_many() -> list[tuple[dict, list[dict]]]:
            async with aiohttp.ClientSession() as session:
                ids = []
                for index in range(12):
                    base = (one, two)[index % 2].url
                    action = ("flows.noop10", "flows.branches")[index % 3 == 0]
                    async with session.post(
                        f"{base}/api/v1/executions", json={"action": action}
                    ) as response:
                        assert response.status == 201, await response.text()
                        ids.append((await response.json())["id"])
                done = []
                for workflow_id in ids:
                    url_ = f"{one.url}/api/v1/executions/{workflow_id}"

                    async def ended(url_=url_) -> dict | None:
                        data = await get(session, url_)
                        return data if data["status"] in ENDED else None

                    workflow = await wait_for(ended, 60, f"workflow {workflow_id}")
                    children = await get(session, f"{url_}/children", depth=-1)
                    done.append((workflow, children))
                return done

        for workflow, children in asyncio.run(run_many()):
            assert workflow["status"] == "succeeded", workflow["result"]
            names = [c["context"]["orquesta"]["task_name"] for c in children]
            # Each task ran once, whichever process stepped the workflow.
            assert len(names) == len(set(names)) and len(names) in (4, 10), names
        logs = one.log_text() + two.log_text()
        assert "another worker took this step over" not in logs


def test_hookyard_execution_get_shows_the_task_tree(serve: ServeLauncher, tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    write_workflow_pack(packs)
    server = serve.start(roles=ROLES, env={"HOOKYARD_PACKS_DIRS": f"[{packs}]"})

    async def run_nested() -> str:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{server.url}/api/v1/executions", json={"action": "flows.nested"}
            ) as response:
                workflow_id = (await response.json())["id"]

            async def ended() -> bool:
                data = await get(session, f"{server.url}/api/v1/executions/{workflow_id}")
                return data["status"] in ENDED

            await wait_for(ended, 30, "the workflow to end")
        return workflow_id

    workflow_id = asyncio.run(run_nested())
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKYARD_")}
    env["HOOKYARD_URL"] = server.url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    shown = subprocess.run(
        [sys.executable, "-m", "engine", "execution", "get", workflow_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    inner = next(line for line in lines if "flows.echo" in line)
    greet = next(line for line in lines if "greet" in line and "core.local" in line)
    assert "inner" in inner and "succeeded" in inner
    # The subworkflow's tasks are indented under it.
    assert greet.index("greet") > inner.index("inner")
