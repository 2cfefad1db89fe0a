"""Rules through the API (POST/PUT/DELETE /api/v1/rules) and execution cancel, on a real
app and a real SQLite file; rule writes with auth on and an admin key."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from engine.config import Settings, WorkerSettings
from engine.http.context import RUNTIME
from engine.model.apikeys import new_api_key
from engine.model.records import NewExecution
from engine.workers.rule_sync import RULE_SYNC
from tests.support.app import app_client, settings_for
from tests.support.processes import gone_within
from tests.support.waiting import wait_execution

FILE_RULE = """\
name: from_file
pack: t
trigger: {type: core.st2.webhook, parameters: {url: filehook}}
action: {ref: core.noop}
"""

API_RULE = {
    "name": "on_push",
    "pack": "ci",
    "description": "main branch pushes",
    "trigger": {"type": "core.st2.webhook", "parameters": {"url": "push"}},
    "criteria": {"trigger.body.ref": {"type": "equals", "pattern": "refs/heads/main"}},
    "action": {"ref": "core.local", "parameters": {"cmd": "echo {{ trigger.body.ref }}"}},
}


def rules_settings(tmp_path: Path, *, auth: bool = True, **changes) -> Settings:
    return settings_for(tmp_path, rules={"from_file": FILE_RULE}, auth=auth, **changes)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return rules_settings(tmp_path)


async def add_key(client: TestClient, *, admin: bool) -> dict[str, str]:
    record, key = new_api_key("admin" if admin else "reader", admin=admin)
    await client.server.app[RUNTIME].store.create_api_key(record)
    return {"St2-Api-Key": key}


@pytest.fixture
def after_start(capsys):
    async def add_admin_key(client: TestClient) -> None:
        capsys.readouterr()  # the first admin key printed on start
        client.admin = await add_key(client, admin=True)

    return add_admin_key


# --- rules -----------------------------------------------------------------------------


async def test_create_then_get_and_list_show_the_origin(client) -> None:
    response = await client.post("/api/v1/rules", json=API_RULE, headers=client.admin)
    assert response.status == 201, await response.text()
    created = await response.json()
    assert (created["ref"], created["source"], created["enabled"]) == ("ci.on_push", "api", True)

    got = await (await client.get("/api/v1/rules/ci.on_push", headers=client.admin)).json()
    assert got["criteria"] == API_RULE["criteria"] and got["source"] == "api"
    listed = await (await client.get("/api/v1/rules", headers=client.admin)).json()
    sources = {rule["ref"]: rule["source"] for rule in listed}
    assert sources["ci.on_push"] == "api"
    assert sources["t.from_file"].endswith(os.path.join("rules", "from_file.yaml"))
    # The new rule's webhook is served at once.
    hooks = await (await client.get("/api/v1/webhooks", headers=client.admin)).json()
    assert "push" in {hook["name"] for hook in hooks}


async def test_invalid_rule_is_a_400_naming_the_field(client) -> None:
    bad = {**API_RULE, "criteria": {"trigger.body.ref": {"type": "equalz", "pattern": "x"}}}
    response = await client.post("/api/v1/rules", json=bad, headers=client.admin)
    assert response.status == 400
    message = (await response.json())["faultstring"]
    assert 'criteria."trigger.body.ref".type' in message and "equalz" in message
    missing = {k: v for k, v in API_RULE.items() if k != "action"}
    response = await client.post("/api/v1/rules", json=missing, headers=client.admin)
    assert "missing required field 'action'" in (await response.json())["faultstring"]
    unknown_action = {**API_RULE, "action": {"ref": "core.nope"}}
    response = await client.post("/api/v1/rules", json=unknown_action, headers=client.admin)
    assert response.status == 400
    assert "core.nope" in (await response.json())["faultstring"]
    response = await client.post("/api/v1/rules", data=b"[1]", headers=client.admin)
    assert response.status == 400
    assert (await client.get("/api/v1/rules/ci.on_push", headers=client.admin)).status == 404


async def test_duplicates_and_file_rules_are_409(client) -> None:
    assert (await client.post("/api/v1/rules", json=API_RULE, headers=client.admin)).status == 201
    again = await client.post("/api/v1/rules", json=API_RULE, headers=client.admin)
    assert again.status == 409 and "already exists" in (await again.json())["faultstring"]

    shadow = {**API_RULE, "name": "from_file", "pack": "t"}
    response = await client.post("/api/v1/rules", json=shadow, headers=client.admin)
    assert response.status == 409
    assert "from_file.yaml" in (await response.json())["faultstring"]
    for method in ("PUT", "DELETE"):
        response = await client.request(
            method, "/api/v1/rules/t.from_file", json={"enabled": False}, headers=client.admin
        )
        assert response.status == 409
        assert "from_file.yaml" in (await response.json())["faultstring"]


async def test_disable_enable_replace_and_delete(client) -> None:
    await client.post("/api/v1/rules", json=API_RULE, headers=client.admin)
    runtime = client.server.app[RUNTIME]
    response = await client.put(
        "/api/v1/rules/ci.on_push", json={"enabled": False}, headers=client.admin
    )
    assert response.status == 200 and (await response.json())["enabled"] is False
    assert runtime.ruleset.get("ci.on_push").enabled is False
    assert "push" not in runtime.ruleset.webhooks

    # What `st2 rule enable` sends: the whole rule as GET returned it, enabled flipped.
    full = await (await client.get("/api/v1/rules/ci.on_push", headers=client.admin)).json()
    response = await client.put(
        "/api/v1/rules/ci.on_push", json={**full, "enabled": True}, headers=client.admin
    )
    assert response.status == 200, await response.text()
    assert runtime.ruleset.get("ci.on_push").enabled is True
    assert runtime.ruleset.get("ci.on_push").description == "main branch pushes"

    renamed = {**API_RULE, "name": "other"}
    response = await client.put("/api/v1/rules/ci.on_push", json=renamed, headers=client.admin)
    assert response.status == 400 and "ci.other" in (await response.json())["faultstring"]

    assert (await client.delete("/api/v1/rules/ci.on_push", headers=client.admin)).status == 204
    assert "ci.on_push" not in runtime.ruleset
    assert (await client.delete("/api/v1/rules/ci.on_push", headers=client.admin)).status == 404
    missing = await client.put("/api/v1/rules/ci.nope", json=API_RULE, headers=client.admin)
    assert missing.status in (400, 404)


async def test_rule_writes_need_an_admin_key(client) -> None:
    reader = await add_key(client, admin=False)
    assert (await client.post("/api/v1/rules", json=API_RULE)).status == 401
    response = await client.post("/api/v1/rules", json=API_RULE, headers=reader)
    assert response.status == 403
    assert (await client.get("/api/v1/rules", headers=reader)).status == 200


async def test_stored_rules_survive_a_restart_and_reach_other_processes(
    tmp_path: Path, capsys
) -> None:
    settings = rules_settings(tmp_path, auth=False)
    async with (
        app_client(settings) as first,
        app_client(settings) as second,
    ):
        assert (await first.post("/api/v1/rules", json=API_RULE)).status == 201
        # The second process learns it by polling the rules version (forced here).
        assert await second.server.app[RULE_SYNC].refresh() is True
        assert "ci.on_push" in second.server.app[RUNTIME].ruleset
        assert await second.server.app[RULE_SYNC].refresh() is False  # nothing new
    async with app_client(settings) as restarted:
        runtime = restarted.server.app[RUNTIME]
        assert runtime.ruleset.get("ci.on_push").source == "api"
        assert "t.from_file" in runtime.ruleset
        # A file reload keeps the stored rules.
        response = await restarted.post("/api/v1/reload")
        assert response.status == 200
        assert "ci.on_push" in runtime.ruleset


# --- cancel ----------------------------------------------------------------------------


async def test_cancel_a_queued_execution(client) -> None:
    store = client.server.app[RUNTIME].store
    queued = await store.create_execution(
        NewExecution(action="core.local", parameters={"cmd": "true"}, context={})
    )
    response = await client.delete(f"/api/v1/executions/{queued.id}", headers=client.admin)
    body = await response.json()
    assert response.status == 200 and body["status"] == "canceled" and body["id"] == queued.id
    assert body["result"] == {"message": "Action canceled by user."}
    again = await client.delete(f"/api/v1/executions/{queued.id}", headers=client.admin)
    assert again.status == 200 and "already" in (await again.json())["faultstring"]
    other = await store.create_execution(
        NewExecution(action="core.local", parameters={"cmd": "true"}, context={})
    )
    response = await client.put(
        f"/api/v1/executions/{other.id}", json={"status": "canceled"}, headers=client.admin
    )
    assert (await response.json())["status"] == "canceled"
    response = await client.put(
        f"/api/v1/executions/{other.id}", json={"status": "paused"}, headers=client.admin
    )
    assert response.status == 400
    missing = await client.delete("/api/v1/executions/" + "0" * 24, headers=client.admin)
    assert missing.status == 404


@pytest.mark.parametrize("through", ["api", "heartbeat"])
async def test_cancel_a_running_execution_kills_it(tmp_path: Path, through: str) -> None:
    """`api`: the request reaches the worker in its own process at once; `heartbeat`: as
    from another process, the worker learns it from its next heartbeat."""
    pid_file = tmp_path / "pid"
    settings = rules_settings(
        tmp_path,
        auth=False,
        roles=("api", "actions"),
        workers=WorkerSettings(poll_interval=0.05, lease_seconds=0.6),
    )
    async with app_client(settings) as client:
        response = await client.post(
            "/api/v1/executions",
            json={"action": "core.local", "parameters": {"cmd": f"echo $$ > {pid_file}; sleep 30"}},
        )
        execution_id = (await response.json())["id"]
        await wait_execution(client, execution_id, statuses=("running",))
        for _ in range(500):
            if pid_file.exists() and pid_file.read_text().strip():
                break
            await asyncio.sleep(0.02)
        pid = int(pid_file.read_text())
        if through == "api":
            answer = await (await client.delete(f"/api/v1/executions/{execution_id}")).json()
            assert answer["status"] in ("canceling", "canceled")
        else:
            store = client.server.app[RUNTIME].store
            _, previous = await store.request_cancel(execution_id)
            assert previous == "running"
        done = await wait_execution(client, execution_id, statuses=("canceled",))
        assert done["result"] == {"message": "Action canceled by user."}
        assert [e["status"] for e in done["log"]][-2:] == ["canceling", "canceled"]
        assert await gone_within(pid, 10.0), f"process {pid} still runs"
