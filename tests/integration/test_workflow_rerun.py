"""Re-running an ended Orquesta workflow from chosen tasks, end to end in one process:
`POST /api/v1/executions/<id>/re_run` with `tasks` and `reset`, the actions and workflows
roles, a real SQLite file and a real PostgreSQL; and the requests it refuses."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from engine.config import AuthSettings, Settings, StoreSettings, WorkerSettings
from engine.http.context import RUNTIME
from tests.support.rerun_pack import write_rerun_pack

ENDED = ("succeeded", "failed", "canceled", "timeout", "abandoned")


@pytest.fixture
def settings(tmp_path: Path, store_url: str) -> Settings:
    packs = tmp_path / "packs"
    write_rerun_pack(packs)
    return Settings(
        store=StoreSettings(url=store_url),
        workers=WorkerSettings(poll_interval=0.5, lease_seconds=5),
        auth=AuthSettings(enabled=False),
        rules_dirs=(),
        packs_dirs=(str(packs),),
        roles=("api", "actions", "workflows"),
        base_dir=str(tmp_path),
    )


async def start(client, action: str, **parameters) -> str:
    reply = await client.post(
        "/api/v1/executions", json={"action": action, "parameters": parameters}
    )
    assert reply.status == 201, await reply.text()
    return (await reply.json())["id"]


async def wait_ended(client, execution_id: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        data = await (await client.get(f"/api/v1/executions/{execution_id}")).json()
        if data["status"] in ENDED:
            return data
        assert time.monotonic() < deadline, f"{execution_id} still {data['status']}"
        await asyncio.sleep(0.02)


async def tasks_of(client, execution_id: str) -> list[tuple[str, int | None, str]]:
    reply = await client.get("/api/v1/executions", params={"parent": execution_id})
    children = await reply.json()
    found = [
        (c["context"]["orquesta"]["task_name"], c["context"]["orquesta"]["item_id"], c["status"])
        for c in children
    ]
    return sorted(found, key=lambda t: (t[0], t[1] if t[1] is not None else -1))


async def re_run(client, execution_id: str, body: dict):
    return await client.post(f"/api/v1/executions/{execution_id}/re_run", json=body)


async def test_a_failed_workflow_reruns_from_its_failed_task_keeping_what_succeeded(
    client, tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    original = await wait_ended(client, await start(client, "reruns.gated", flag=str(flag)))
    assert original["status"] == "failed"
    assert await tasks_of(client, original["id"]) == [
        ("check", None, "failed"),
        ("first", None, "succeeded"),
    ]
    flag.touch()
    reply = await re_run(client, original["id"], {"parameters": {}, "tasks": ["check"]})
    assert reply.status == 201, await reply.text()
    created = await reply.json()
    assert created["id"] != original["id"]
    assert created["context"]["re-run"] == {"ref": original["id"], "tasks": ["check"]}
    again = await wait_ended(client, created["id"])
    assert again["status"] == "succeeded", again["result"]
    # `first` did not run again: its published value and task(first).result are kept.
    assert again["result"] == {
        "output": {"one": "one", "two": "two", "three": "three", "first_said": "one"}
    }
    assert await tasks_of(client, again["id"]) == [
        ("check", None, "succeeded"),
        ("last", None, "succeeded"),
    ]
    # The original is as it ended.
    kept = await (await client.get(f"/api/v1/executions/{original['id']}")).json()
    assert kept["status"] == "failed" and kept["result"] == original["result"]
    assert len(await tasks_of(client, original["id"])) == 2


async def test_with_items_reruns_failed_items_only_or_every_item_with_reset(
    client, tmp_path: Path
) -> None:
    (tmp_path / "a").touch()
    (tmp_path / "c").touch()
    names = ["a", "b", "c"]
    workflow_id = await start(client, "reruns.gated_items", dir=str(tmp_path), names=names)
    original = await wait_ended(client, workflow_id)
    assert original["status"] == "failed"
    (tmp_path / "b").touch()
    reply = await re_run(client, workflow_id, {"tasks": ["each"]})
    assert reply.status == 201, await reply.text()
    failed_only = await wait_ended(client, (await reply.json())["id"])
    assert failed_only["status"] == "succeeded", failed_only["result"]
    assert failed_only["result"]["output"] == {"said": names}
    assert await tasks_of(client, failed_only["id"]) == [("each", 1, "succeeded")]

    reply = await re_run(client, workflow_id, {"tasks": ["each"], "reset": ["each"]})
    assert reply.status == 201, await reply.text()
    every = await wait_ended(client, (await reply.json())["id"])
    assert every["status"] == "succeeded", every["result"]
    assert every["context"]["re-run"]["reset"] == ["each"]
    assert [t[1] for t in await tasks_of(client, every["id"])] == [0, 1, 2]

    # A re-run is a workflow like any other: it can be re-run from tasks in turn.
    reply = await re_run(client, every["id"], {"tasks": ["each"], "reset": ["each"]})
    assert reply.status == 201, await reply.text()
    third = await wait_ended(client, (await reply.json())["id"])
    assert third["status"] == "succeeded" and third["result"]["output"] == {"said": names}
    assert third["context"]["re-run"]["ref"] == every["id"]


async def test_a_workflow_with_a_secret_input_reruns_its_sealed_state(
    client, tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    secret = "s3cr3t-value"
    original_id = await start(client, "reruns.secret_gated", flag=str(flag), token=secret)
    assert (await wait_ended(client, original_id))["status"] == "failed"
    flag.touch()
    reply = await re_run(client, original_id, {"tasks": ["check"]})
    assert reply.status == 201, await reply.text()
    created = await reply.json()
    assert created["parameters"]["token"] == "********"
    again = await wait_ended(client, created["id"])
    assert again["status"] == "succeeded", again["result"]
    assert again["result"] == {"output": {"length": len(secret)}}
    runtime = client.server.app[RUNTIME]
    stored = await runtime.store.get_workflow_state(created["id"])
    assert secret not in json.dumps(stored) and "sealed" in stored


async def test_rerun_requests_that_cannot_work_are_refused_naming_the_problem(
    client, tmp_path: Path
) -> None:
    failed = await wait_ended(client, await start(client, "reruns.gated", flag="/nonexistent"))
    url = failed["id"]
    refusals = [
        ({"tasks": ["check", "nope", "never"]}, 400, "not found: nope, never"),
        ({"tasks": ["last"]}, 400, "not found: last"),  # never reached
        ({"tasks": ["check"], "reset": ["first"]}, 400, "does not match the tasks to rerun: first"),
        ({"tasks": ["check"], "parameters": {"flag": "x"}}, 400, "Parameters override"),
        ({"tasks": "check"}, 400, '"tasks" must be a list of task names'),
        ({"tasks": [""]}, 400, '"tasks" must be a list of task names'),
        ({"tasks": [3]}, 400, '"tasks" must be a list of task names'),
        ({"reset": {"a": 1}}, 400, '"reset" must be a list of task names'),
        ({"tasks": ["check"], "delay": -1}, 400, '"delay"'),
        ({"tasks": ["check"], "delay": "soon"}, 400, '"delay"'),
        ([], 400, "JSON object"),
    ]
    for body, status, message in refusals:
        reply = await re_run(client, url, body)
        assert reply.status == status, (body, await reply.text())
        assert message in (await reply.json())["faultstring"], body
    garbage = await client.post(f"/api/v1/executions/{url}/re_run", data=b"{nope")
    assert garbage.status == 400 and "JSON" in (await garbage.json())["faultstring"]
    missing = await re_run(client, "0" * 32, {"tasks": ["check"]})
    assert missing.status == 404

    chain = await wait_ended(client, await start(client, "reruns.chain"))
    reply = await re_run(client, chain["id"], {"tasks": ["only"]})
    assert reply.status == 400
    assert (await reply.json())["faultstring"] == (
        "Task option is only supported for Orquesta workflows: reruns.chain runs with the "
        f"action-chain runner, so execution {chain['id']} can only be re-run whole "
        "(without tasks)."
    )

    sleepy = await start(client, "reruns.sleepy")
    deadline = time.monotonic() + 20
    while (await (await client.get(f"/api/v1/executions/{sleepy}")).json())["status"] in (
        "requested",
        "scheduled",
    ):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    reply = await re_run(client, sleepy, {"tasks": ["nap"]})
    assert reply.status == 409
    assert "once it has ended" in (await reply.json())["faultstring"]
    assert (await client.delete(f"/api/v1/executions/{sleepy}")).status == 200
    assert (await wait_ended(client, sleepy))["status"] == "canceled"

    # Nothing was created by a refused request, and the engine still serves.
    listed = await (await client.get("/api/v1/executions", params={"limit": -1})).json()
    refused = {url, chain["id"], sleepy}
    assert not [e for e in listed if (e["context"].get("re-run") or {}).get("ref") in refused]
