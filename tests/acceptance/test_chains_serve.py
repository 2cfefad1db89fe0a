"""Action chains in a real `hookyard serve`: killed with SIGKILL in the middle of a chain
and restarted, it finishes the chain, losing no link and requesting none twice — on a
SQLite file and on PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.chain_pack import write_chain_pack
from tests.support.postgres import admin, database_url, server_url
from tests.support.serve import ServeLauncher

ROLES = "api,actions,workflows"
ENDED = ("succeeded", "failed", "canceled", "timeout", "abandoned")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'chains.db'}"
        return
    # Created and dropped with asyncio.run each (the tests here drive their own loops).
    server = server_url()
    name = f"hookyard_chain_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin(server, f'CREATE DATABASE "{name}"'))
    try:
        yield database_url(server, name)
    finally:
        asyncio.run(admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


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


def test_a_chain_killed_mid_way_finishes_after_a_restart_running_no_link_twice(
    serve: ServeLauncher, tmp_path: Path, store_url: str
) -> None:
    packs = tmp_path / "packs"
    write_chain_pack(packs)
    log = tmp_path / "links.log"
    # Short leases: the link cut short by the kill is claimed again soon after the restart.
    env = {"HOOKYARD_PACKS_DIRS": f"[{packs}]", "HOOKYARD_WORKERS__LEASE_SECONDS": "3"}
    first = serve.start(store=store_url, roles=ROLES, env=env)

    async def start_and_kill() -> str:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{first.url}/api/v1/executions",
                json={"action": "chains.slow_links", "parameters": {"log": str(log)}},
            ) as response:
                assert response.status == 201, await response.text()
                chain_id = (await response.json())["id"]

            async def three_done() -> bool:
                children = await get(session, f"{first.url}/api/v1/executions/{chain_id}/children")
                return sum(c["status"] == "succeeded" for c in children) >= 3

            await wait_for(three_done, 30, "three links done")
        return chain_id

    chain_id = asyncio.run(start_and_kill())
    first.kill()
    second = serve.start(store=store_url, roles=ROLES, env=env)

    async def finish() -> tuple[dict, list[dict]]:
        async with aiohttp.ClientSession() as session:
            url = f"{second.url}/api/v1/executions/{chain_id}"

            async def ended() -> dict | None:
                data = await get(session, url)
                return data if data["status"] in ENDED else None

            chain = await wait_for(ended, 60, "the chain to end")
            return chain, await get(session, f"{url}/children", depth=-1)

    chain, children = asyncio.run(finish())
    assert chain["status"] == "succeeded", (chain["result"], second.log_tail())
    links = [f"link{n}" for n in range(1, 9)]
    # One child per link: none lost, none requested twice. (A link cut short by the kill
    # is the same execution's second attempt, not a second run of the link.)
    assert [c["context"]["chain"]["name"] for c in children] == links
    assert all(c["status"] == "succeeded" for c in children), children
    assert [task["name"] for task in chain["result"]["tasks"]] == links
    assert [task["execution_id"] for task in chain["result"]["tasks"]] == [
        c["id"] for c in children
    ]
    # The links ran in order; each wrote its line (the one cut short may have written
    # it before the kill and again on its second attempt).
    written = [int(line) for line in log.read_text().split()]
    assert written == sorted(written) and sorted(set(written)) == list(range(1, 9))
