"""An answer that arrives while the workflow's pause is being decided: the app runs the API
and actions roles, and the test takes the workflows role's steps itself, so that the
answer lands between a step's claim and its apply — deterministically. Real SQLite file
and real PostgreSQL (conftest.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from engine.config import AuthSettings, Settings, StoreSettings, WorkerSettings
from engine.http.context import RUNTIME
from engine.workers.workflows import step_workflow
from tests.support.inquiries import copy_ask_examples, wait_inquiries, wait_status
from tests.support.postgres import truncate_all


@pytest.fixture
async def empty_store_url(store_url: str) -> str:
    if store_url.startswith("postgresql://"):
        await truncate_all(store_url)
    return store_url


@pytest.fixture
def settings(tmp_path: Path, empty_store_url: str) -> Settings:
    packs = tmp_path / "packs"
    copy_ask_examples(packs)
    return Settings(
        store=StoreSettings(url=empty_store_url),
        workers=WorkerSettings(poll_interval=0.2, lease_seconds=30),
        auth=AuthSettings(enabled=False),
        rules_dirs=(),
        packs_dirs=(str(packs),),
        roles=("api", "actions"),  # no workflows role: the test steps the workflows
        base_dir=str(tmp_path),
    )


async def step_until(client, done, timeout: float = 20.0) -> None:
    """Take the workflows role's steps until `done()` holds."""
    store = client.app[RUNTIME].store
    deadline = time.monotonic() + timeout
    while not await done():
        assert time.monotonic() < deadline, "the workflow never got there"
        for step in await store.claim_workflow_steps(10, 30):
            await step_workflow(client.app[RUNTIME], step)
        await asyncio.sleep(0.05)


async def test_an_answer_given_while_the_pause_is_decided_still_resumes(client) -> None:
    store = client.app[RUNTIME].store
    reply = await client.post(
        "/api/v1/executions", json={"action": "examples.orquesta-ask-basic", "parameters": {}}
    )
    workflow = (await reply.json())["id"]

    async def ask_pending() -> bool:
        return len(await wait_inquiries(client, 1, timeout=0)) == 1

    await step_until(client, ask_pending)
    [inquiry] = await wait_inquiries(client, 1)
    [step] = await store.claim_workflow_steps(10, 30)  # sees the ask pending
    assert (step.workflow.status, step.asking) == ("running", 1)
    # The answer lands now: the workflow is still running, so nothing is resumed.
    put = await client.put(
        f"/api/v1/inquiries/{inquiry['id']}",
        json={"id": inquiry["id"], "response": {"approved": True}},
    )
    assert put.status == 200
    await step_workflow(client.app[RUNTIME], step)  # decides the pause it saw
    assert (await store.get_execution(workflow)).status == "paused"

    async def ended() -> bool:
        return (await store.get_execution(workflow)).status in ("succeeded", "failed")

    await step_until(client, ended)
    done = await wait_status(client, workflow, ())
    assert done["status"] == "succeeded", done["result"]
    children = await (await client.get(f"/api/v1/executions/{workflow}/children")).json()
    names = [child["context"]["orquesta"]["task_name"] for child in children]
    assert sorted(names) == ["finish", "get_approval", "start"]
