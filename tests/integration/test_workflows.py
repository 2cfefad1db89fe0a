"""Orquesta workflows end to end in one process: POST /api/v1/executions, the actions and
workflows roles, a real SQLite file and a real PostgreSQL (see conftest.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from engine.config import AuthSettings, Settings, StoreSettings, WorkerSettings
from engine.http.context import RUNTIME
from engine.model.records import NewExecution
from tests.support.app import app_client
from tests.support.waiting import wait_explained_tasks
from tests.support.workflow_pack import write_workflow_pack

ENDED = ("succeeded", "failed", "canceled", "timeout", "abandoned")


@pytest.fixture
def settings(tmp_path: Path, store_url: str) -> Settings:
    """The app of the shared `client` fixture (tests/integration/conftest.py)."""
    packs = tmp_path / "packs"
    write_workflow_pack(packs)
    return Settings(
        store=StoreSettings(url=store_url),
        workers=WorkerSettings(poll_interval=0.5, lease_seconds=5),
        auth=AuthSettings(enabled=False),
        rules_dirs=(),
        packs_dirs=(str(packs),),
        roles=("api", "actions", "workflows"),
        base_dir=str(tmp_path),
    )


async def run(client, action: str, timeout: float = 30.0, **parameters) -> dict:
    reply = await client.post(
        "/api/v1/executions", json={"action": action, "parameters": parameters}
    )
    assert reply.status == 201, await reply.text()
    return await wait_ended(client, (await reply.json())["id"], timeout)


async def wait_ended(client, execution_id: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        data = await (await client.get(f"/api/v1/executions/{execution_id}")).json()
        if data["status"] in ENDED or time.monotonic() > deadline:
            return data
        await asyncio.sleep(0.01)


async def children_of(client, execution_id: str) -> list[dict]:
    reply = await client.get(f"/api/v1/executions/{execution_id}/children", params={"depth": -1})
    assert reply.status == 200
    return await reply.json()


async def test_a_sequential_workflow_succeeds_with_its_output_and_children(client) -> None:
    workflow = await run(client, "flows.echo", name="mona")
    assert workflow["status"] == "succeeded", workflow["result"]
    assert workflow["result"] == {"output": {"said": "hello mona", "shouted": "hello mona!"}}
    assert workflow["action"]["runner_type"] == "orquesta"
    children = await children_of(client, workflow["id"])
    assert [c["context"]["orquesta"]["task_name"] for c in children] == ["greet", "shout"]
    assert all(c["parent"] == workflow["id"] for c in children)
    assert all(c["status"] == "succeeded" for c in children)
    assert children[0]["context"]["parent"]["execution_id"] == workflow["id"]
    # Run by a person through the API: the command is written as the author wrote it, as
    # StackStorm does (a trigger's values are quoted: the next tests).
    assert children[1]["parameters"] == {"cmd": "echo hello mona!"}
    assert workflow["children"] == [c["id"] for c in children]
    listed = await (
        await client.get("/api/v1/executions", params={"parent": workflow["id"]})
    ).json()
    assert sorted(c["id"] for c in listed) == sorted(workflow["children"])
    top = await (await client.get("/api/v1/executions", params={"parent": "null"})).json()
    assert workflow["id"] in [e["id"] for e in top]
    assert not set(workflow["children"]) & {e["id"] for e in top}


async def test_ten_noop_tasks_in_sequence_run_each_once(client) -> None:
    workflow = await run(client, "flows.noop10", name="x")
    assert workflow["status"] == "succeeded", workflow["result"]
    assert workflow["result"] == {"output": {"greeting": "x"}}
    children = await children_of(client, workflow["id"])
    names = [c["context"]["orquesta"]["task_name"] for c in children]
    assert names == [f"task{n}" for n in range(1, 11)]


async def test_branches_join_and_the_output_has_both(client) -> None:
    workflow = await run(client, "flows.branches")
    assert workflow["status"] == "succeeded", workflow["result"]
    assert workflow["result"] == {"output": {"joined": "LR"}}
    names = sorted(
        c["context"]["orquesta"]["task_name"] for c in await children_of(client, workflow["id"])
    )
    assert names == ["both", "left", "right", "start"]


async def test_a_failing_task_fails_the_workflow_with_stackstorms_errors(client) -> None:
    workflow = await run(client, "flows.failing")
    assert workflow["status"] == "failed"
    [error] = workflow["result"]["errors"]
    assert error["type"] == "error" and error["task_id"] == "boom"
    assert error["message"] == "Execution failed. See result for details."
    assert error["result"]["return_code"] == 3
    assert workflow["result"]["output"] == {"reached": False}
    [child] = await children_of(client, workflow["id"])
    assert child["status"] == "failed"


async def test_a_broken_workflow_fails_saying_where(client) -> None:
    workflow = await run(client, "flows.broken")
    assert workflow["status"] == "failed"
    [error] = workflow["result"]["errors"]
    assert "broken.yaml:6:" in error["message"] and "nowhere" in error["message"]
    assert await children_of(client, workflow["id"]) == []


async def test_runaway_expressions_fail_the_workflow_and_the_server_keeps_serving(
    client,
) -> None:
    reply = await client.post("/api/v1/executions", json={"action": "flows.looping"})
    looping = (await reply.json())["id"]
    growing = await run(client, "flows.growing", timeout=60)
    # Served while the expressions ran.
    started = time.monotonic()
    assert (await client.get("/api/v1/executions", params={"limit": 1})).status == 200
    assert time.monotonic() - started < 1.0
    assert growing["status"] == "failed"
    grown = growing["result"]["errors"][-1]["message"]
    assert "over the limit" in grown or "is refused" in grown
    looped = await wait_ended(client, looping, 60)
    assert looped["status"] == "failed"
    message = looped["result"]["errors"][0]["message"]
    assert "refused" in message or "ran longer" in message


async def test_cancel_reaches_the_running_task_and_ends_the_workflow(client) -> None:
    reply = await client.post("/api/v1/executions", json={"action": "flows.slow_one"})
    workflow_id = (await reply.json())["id"]
    await asyncio.sleep(0.3)
    canceled = await client.delete(f"/api/v1/executions/{workflow_id}")
    assert canceled.status == 200, await canceled.text()
    assert (await canceled.json())["status"] == "canceling"
    # The running task run stops at once (not at its next heartbeat, seconds later).
    workflow = await wait_ended(client, workflow_id, 3)
    assert workflow["status"] == "canceled"
    for child in await children_of(client, workflow_id):
        assert child["status"] in ENDED


async def test_a_canceled_task_cancels_its_workflow_and_the_other_tasks(client) -> None:
    reply = await client.post("/api/v1/executions", json={"action": "flows.two_sleeps"})
    workflow_id = (await reply.json())["id"]

    async def both_running() -> list[dict]:
        for _ in range(300):
            children = await children_of(client, workflow_id)
            if len(children) == 2 and all(c["status"] == "running" for c in children):
                return children
            await asyncio.sleep(0.01)
        raise AssertionError(f"tasks not running: {children}")

    first, second = await both_running()
    assert (await client.delete(f"/api/v1/executions/{first['id']}")).status == 200
    workflow = await wait_ended(client, workflow_id, 4)
    assert workflow["status"] == "canceled", workflow
    statuses = {c["id"]: c["status"] for c in await children_of(client, workflow_id)}
    assert statuses == {first["id"]: "canceled", second["id"]: "canceled"}


async def test_a_task_delay_holds_its_run_back(client) -> None:
    workflow = await run(client, "flows.delayed")
    assert workflow["status"] == "succeeded", workflow["result"]
    _first, later = await children_of(client, workflow["id"])
    assert later["context"]["orquesta"]["task_name"] == "later"
    requested = datetime.fromisoformat(later["start_timestamp"])
    started = datetime.fromisoformat(later["started_at"])
    assert (started - requested).total_seconds() >= 0.95


async def test_st2kv_and_the_st2_context_reach_the_expressions(client) -> None:
    for name, body in (
        ("greeting", {"name": "greeting", "value": "hi"}),
        ("mine", {"name": "mine", "value": "own", "scope": "user", "user": "api"}),
    ):
        reply = await client.put(f"/api/v1/keys/{name}", json=body)
        assert reply.status == 200, await reply.text()
    workflow = await run(client, "flows.kv")
    assert workflow["status"] == "succeeded", workflow["result"]
    assert workflow["result"]["output"] == {
        "greeting": "hi",
        "mine": "own",
        "unscoped": "own",  # as StackStorm: a key without "system." is the user's
        "missing": "fallback",
        "who": "api",
        # server.api_url unset: the address this server listens on.
        "api": "http://127.0.0.1:8080/api/v1",
    }


async def test_pause_holds_the_next_task_back_and_resume_finishes_the_workflow(client) -> None:
    reply = await client.post("/api/v1/executions", json={"action": "flows.slow8"})
    workflow_id = (await reply.json())["id"]
    for _ in range(300):
        if await children_of(client, workflow_id):
            break
        await asyncio.sleep(0.01)
    url = f"/api/v1/executions/{workflow_id}"
    paused = await client.put(url, json={"status": "pausing"})
    assert paused.status == 200, await paused.text()
    assert (await paused.json())["status"] == "pausing"
    again = await client.put(url, json={"status": "pausing"})
    assert again.status == 409 and "cannot be paused" in await again.text()
    deadline = time.monotonic() + 10
    while (await (await client.get(url)).json())["status"] != "paused":
        assert time.monotonic() < deadline, "never paused"
        await asyncio.sleep(0.02)
    held = await children_of(client, workflow_id)
    assert all(child["status"] == "succeeded" for child in held)
    await asyncio.sleep(0.5)
    assert len(await children_of(client, workflow_id)) == len(held) < 8

    resumed = await client.put(url, json={"status": "resuming"})
    assert resumed.status == 200 and (await resumed.json())["status"] == "resuming"
    workflow = await wait_ended(client, workflow_id, 30)
    assert workflow["status"] == "succeeded", workflow["result"]
    statuses = [entry["status"] for entry in workflow["log"]]
    assert statuses[-5:] == ["pausing", "paused", "resuming", "running", "succeeded"]
    assert len(await children_of(client, workflow_id)) == 8


async def test_a_paused_workflow_can_be_canceled(client) -> None:
    reply = await client.post("/api/v1/executions", json={"action": "flows.slow8"})
    workflow_id = (await reply.json())["id"]
    url = f"/api/v1/executions/{workflow_id}"
    for _ in range(300):
        if (await (await client.get(url)).json())["status"] == "running":
            break
        await asyncio.sleep(0.01)
    assert (await client.put(url, json={"status": "pausing"})).status == 200
    assert (await client.delete(url)).status == 200
    workflow = await wait_ended(client, workflow_id, 10)
    assert workflow["status"] == "canceled"
    not_a_workflow = (await children_of(client, workflow_id))[0]["id"]
    refused = await client.put(f"/api/v1/executions/{not_a_workflow}", json={"status": "pausing"})
    assert refused.status == 404


async def test_a_subworkflow_runs_as_a_child_workflow(client) -> None:
    workflow = await run(client, "flows.nested")
    assert workflow["status"] == "succeeded", workflow["result"]
    assert workflow["result"] == {"output": {"inner_said": "hello nested"}}
    tree = await children_of(client, workflow["id"])
    sub = tree[0]
    assert sub["action"]["runner_type"] == "orquesta" and sub["parent"] == workflow["id"]
    assert sub["result"]["output"]["shouted"] == "hello nested!"
    assert [c["parent"] for c in tree[1:]] == [sub["id"], sub["id"]]
    direct = await (
        await client.get(f"/api/v1/executions/{workflow['id']}/children", params={"depth": 1})
    ).json()
    assert [c["id"] for c in direct] == [sub["id"]]


async def test_a_secret_input_is_not_stored_in_the_clear(client, store_url: str) -> None:
    workflow = await run(client, "flows.secretive", token="s3cr3t-value")
    assert workflow["status"] == "succeeded", workflow["result"]
    assert workflow["result"] == {"output": {"length": 12}}
    assert workflow["parameters"]["token"] == "********"
    if store_url.startswith("sqlite:///"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            [(state,)] = conn.execute(
                "SELECT state FROM workflow_runs WHERE execution_id = ?", (workflow["id"],)
            ).fetchall()
    else:
        conn = await asyncpg.connect(store_url)
        try:
            state = await conn.fetchval(
                "SELECT state::text FROM workflow_runs WHERE execution_id = $1", workflow["id"]
            )
        finally:
            await conn.close()
    assert "s3cr3t-value" not in state and "$hookyard_secret" in state


async def test_re_run_runs_the_workflow_again_with_new_parameters(client) -> None:
    first = await run(client, "flows.echo", name="mona")
    reply = await client.post(
        f"/api/v1/executions/{first['id']}/re_run", json={"parameters": {"name": "lisa"}}
    )
    assert reply.status == 201, await reply.text()
    again = await wait_ended(client, (await reply.json())["id"])
    assert again["status"] == "succeeded", again["result"]
    assert again["result"]["output"]["said"] == "hello lisa"
    assert again["context"]["re-run"] == {"ref": first["id"]}
    partial = await client.post(
        f"/api/v1/executions/{first['id']}/re_run", json={"tasks": ["shout"]}
    )
    assert partial.status == 201, await partial.text()
    from_shout = await wait_ended(client, (await partial.json())["id"])
    assert from_shout["status"] == "succeeded", from_shout["result"]
    assert from_shout["result"]["output"]["said"] == "hello mona"


async def test_with_items_runs_every_item_at_most_concurrency_at_once(client) -> None:
    workflow = await run(client, "flows.slow_items", count=12, concurrency=3)
    assert workflow["status"] == "succeeded", workflow["result"]
    # (core.local reads a stdout that is JSON as its value.)
    assert workflow["result"]["output"]["said"] == list(range(12))
    children = await children_of(client, workflow["id"])
    assert sorted(c["context"]["orquesta"]["item_id"] for c in children) == list(range(12))
    spans = [
        (datetime.fromisoformat(c["started_at"]), datetime.fromisoformat(c["end_timestamp"]))
        for c in children
    ]
    most = max(sum(start <= at < end for start, end in spans) for at, _ in spans)
    assert most <= 3


FLOW_RULE = """\
name: on_flow
pack: flows
trigger: {type: core.st2.webhook, parameters: {url: flow}}
action:
  ref: flows.echo
  parameters:
    name: "{{ trigger.body.name }}"
"""


async def test_a_rule_starts_a_workflow_and_explain_shows_its_tasks(
    tmp_path: Path, store_url: str
) -> None:
    packs, rules = tmp_path / "packs", tmp_path / "rules"
    write_workflow_pack(packs)
    rules.mkdir()
    (rules / "flow.yaml").write_text(FLOW_RULE)
    settings = Settings(
        store=StoreSettings(url=store_url),
        workers=WorkerSettings(poll_interval=0.5, lease_seconds=5),
        auth=AuthSettings(enabled=False),
        rules_dirs=(str(rules),),
        packs_dirs=(str(packs),),
        roles=("api", "rules", "actions", "workflows"),
        base_dir=str(tmp_path),
    )
    async with app_client(settings) as client:
        accepted = await (await client.post("/webhooks/flow", json={"name": "rita"})).json()
        execution, tasks = await wait_explained_tasks(client, accepted["id"], 2)
        assert [t["task"] for t in tasks] == ["greet", "shout"]
        workflow = await wait_ended(client, execution["id"])
        assert workflow["result"]["output"]["said"] == "hello rita"


async def test_a_value_in_a_tasks_shell_command_is_data_not_code(client, tmp_path: Path) -> None:
    """A workflow a rule requested for a trigger (its context names them, as
    engine.rules.render.action_context_for writes it): the sender's value in the task's
    command is quoted where the command puts it, never run."""
    marker = tmp_path / "ran"
    hostile = f"x; touch {marker} $(touch {marker}) `touch {marker}`"
    context = {"rule": {"ref": "t.on_hook"}, "trigger_instance": {"id": "f" * 24}, "user": "r"}
    requested = await client.server.app[RUNTIME].store.create_execution(
        NewExecution("flows.shout", {"name": hostile}, context=context)
    )
    workflow = await wait_ended(client, requested.id)
    assert workflow["status"] == "succeeded", workflow["result"]
    assert workflow["result"]["output"] == {"said": hostile}
    assert not marker.exists()


async def test_listing_a_with_items_workflows_tree_queries_per_workflow_not_per_task(
    client,
) -> None:
    workflow = await run(client, "flows.items", count=40, concurrency=40)
    assert workflow["status"] == "succeeded", workflow["result"]
    store = client.server.app[RUNTIME].store
    real = store.list_executions
    parents_listed = []

    async def counted(filters, limit, offset):
        if "parent" in filters:
            parents_listed.append(filters["parent"])
        return await real(filters, limit, offset)

    store.list_executions = counted
    try:
        reply = await client.get(
            f"/api/v1/executions/{workflow['id']}/children", params={"depth": "-1"}
        )
    finally:
        del store.list_executions
    assert reply.status == 200
    assert len(await reply.json()) == 40
    # The workflow's children listed once; none of its 40 core.noop runs is asked for its own.
    assert parents_listed == [workflow["id"]]
