"""Pause and resume through levels of subworkflows, as StackStorm: a parent whose
subworkflow is pausing shows `pausing` until every level below it is paused, then
`paused`; resume goes through `resuming` down and back up. Orquesta three levels deep, and
an action chain whose link is an Orquesta workflow; a real SQLite file and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from engine.config import Settings, StoreSettings
from tests.support.app import settings_for
from tests.support.packs import write_pack
from tests.support.waiting import get_json

PACK = {
    "actions/outer.yaml": """\
        name: outer
        runner_type: orquesta
        entry_point: workflows/outer.yaml
        parameters:
          hold: {type: string, required: true}
        """,
    "actions/workflows/outer.yaml": """\
        version: 1.0
        input:
          - hold
        tasks:
          middle:
            action: n.middle hold=<% ctx(hold) %>
        output:
          - said: <% task(middle).result.output.said %>
        """,
    "actions/middle.yaml": """\
        name: middle
        runner_type: orquesta
        entry_point: workflows/middle.yaml
        parameters:
          hold: {type: string, required: true}
        """,
    "actions/workflows/middle.yaml": """\
        version: 1.0
        input:
          - hold
        tasks:
          deep:
            action: n.deep hold=<% ctx(hold) %>
        output:
          - said: <% task(deep).result.output.said %>
        """,
    "actions/deep.yaml": """\
        name: deep
        runner_type: orquesta
        entry_point: workflows/deep.yaml
        parameters:
          hold: {type: string, required: true}
        """,
    "actions/workflows/deep.yaml": """\
        version: 1.0
        input:
          - hold
        tasks:
          wait:
            action: core.local
            input:
              cmd: while [ -f <% ctx(hold) %> ]; do sleep 0.05; done
            next:
              - do: after
          after:
            action: core.echo message=done
            next:
              - publish:
                  - said: <% result().stdout %>
        output:
          - said: <% ctx(said) %>
        """,
    "actions/chained.yaml": """\
        name: chained
        runner_type: action-chain
        entry_point: chains/chained.yaml
        parameters:
          hold: {type: string, required: true}
        """,
    "actions/chains/chained.yaml": """\
        chain:
          - name: deep
            ref: n.deep
            params:
              hold: "{{ hold }}"
            on-success: last
          - name: last
            ref: core.noop
        """,
}


@pytest.fixture
def settings(tmp_path: Path, store_url: str) -> Settings:
    """The app of the shared `client` fixture (tests/integration/conftest.py)."""
    packs = tmp_path / "packs"
    write_pack(packs, "n", PACK)
    return settings_for(
        tmp_path,
        roles=("api", "actions", "workflows"),
        store=StoreSettings(url=store_url),
        packs_dirs=(str(packs),),
    )


async def status(client, execution_id: str) -> str:
    return (await get_json(client, f"/api/v1/executions/{execution_id}"))["status"]


async def only_child(client, parent_id: str, deadline: float) -> dict:
    while True:
        children = await get_json(client, "/api/v1/executions", parent=parent_id)
        if children and children[0]["status"] == "running":
            return children[0]
        assert time.monotonic() < deadline, f"{parent_id} never ran a child"
        await asyncio.sleep(0.02)


async def wait_status(client, execution_id: str, wanted: str, deadline: float) -> None:
    while (now := await status(client, execution_id)) != wanted:
        assert time.monotonic() < deadline, f"{execution_id} is {now}, never {wanted}"
        await asyncio.sleep(0.02)


def logged(execution: dict) -> list[str]:
    return [entry["status"] for entry in execution["log"]]


async def check_pause_through_levels(client, top_id: str, hold: Path) -> list[str]:
    """Pause `top_id` while its deepest task runs: every level stays `pausing` until the
    task ends, then each is `paused`; resume; returns the ids top first."""
    deadline = time.monotonic() + 30
    levels = [top_id]
    while True:
        child = await only_child(client, levels[-1], deadline)
        if child["action"]["ref"] == "core.local":
            break
        levels.append(child["id"])
    url = f"/api/v1/executions/{top_id}"
    reply = await client.put(url, json={"status": "pausing"})
    assert reply.status == 200 and (await reply.json())["status"] == "pausing"
    await asyncio.sleep(0.6)  # the deepest task still runs: nothing is paused yet
    assert [await status(client, level) for level in levels] == ["pausing"] * len(levels)
    hold.unlink()
    await wait_status(client, top_id, "paused", deadline)
    assert [await status(client, level) for level in levels] == ["paused"] * len(levels)
    deepest = await get_json(client, "/api/v1/executions", parent=levels[-1])
    assert len(deepest) == 1  # `after` is held back

    reply = await client.put(url, json={"status": "resuming"})
    assert reply.status == 200 and (await reply.json())["status"] == "resuming"
    await wait_status(client, top_id, "succeeded", deadline)
    for level in levels:
        execution = await get_json(client, f"/api/v1/executions/{level}")
        assert logged(execution)[-5:] == ["pausing", "paused", "resuming", "running", "succeeded"]
    return levels


async def test_an_orquesta_parent_is_paused_once_every_level_below_is(
    client, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    reply = await client.post(
        "/api/v1/executions", json={"action": "n.outer", "parameters": {"hold": str(hold)}}
    )
    top_id = (await reply.json())["id"]
    levels = await check_pause_through_levels(client, top_id, hold)
    assert len(levels) == 3
    top = await get_json(client, f"/api/v1/executions/{top_id}")
    assert top["result"] == {"output": {"said": "done"}}


async def test_a_chain_is_paused_once_its_orquesta_link_is(client, tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    reply = await client.post(
        "/api/v1/executions", json={"action": "n.chained", "parameters": {"hold": str(hold)}}
    )
    top_id = (await reply.json())["id"]
    levels = await check_pause_through_levels(client, top_id, hold)
    assert len(levels) == 2
    chain = await get_json(client, f"/api/v1/executions/{top_id}")
    assert [task["name"] for task in chain["result"]["tasks"]] == ["deep", "last"]


async def test_a_subworkflow_paused_on_its_own_pauses_its_idle_parent_and_resumes_it(
    client, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    reply = await client.post(
        "/api/v1/executions", json={"action": "n.outer", "parameters": {"hold": str(hold)}}
    )
    top_id = (await reply.json())["id"]
    deadline = time.monotonic() + 30
    middle = await only_child(client, top_id, deadline)
    deep = await only_child(client, middle["id"], deadline)
    await only_child(client, deep["id"], deadline)
    url = f"/api/v1/executions/{middle['id']}"
    assert (await client.put(url, json={"status": "pausing"})).status == 200
    await asyncio.sleep(0.6)
    # As Orquesta: a task pausing leaves its workflow running.
    assert await status(client, top_id) == "running"
    assert await status(client, deep["id"]) == "pausing"
    hold.unlink()
    # Once nothing of it runs any more, the parent is paused too.
    await wait_status(client, top_id, "paused", deadline)
    assert await status(client, middle["id"]) == "paused"

    # Resuming the subworkflow resumes the paused parent above it.
    assert (await client.put(url, json={"status": "resuming"})).status == 200
    await wait_status(client, top_id, "succeeded", deadline)
    top = await get_json(client, f"/api/v1/executions/{top_id}")
    assert logged(top)[-5:] == ["running", "paused", "resuming", "running", "succeeded"]
    assert top["result"] == {"output": {"said": "done"}}
