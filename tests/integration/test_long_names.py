"""Names over their bound (issue 15 item 9) through the API and the CLI, on a real app and
a real SQLite file; and a rule stored earlier with a huge name is still deleted by its id."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from engine.config import Settings
from engine.http.context import RUNTIME
from engine.model.apikeys import new_api_key
from engine.model.names import MAX_NAME_CHARS, MAX_REF_CHARS
from engine.rules.rule import rule_id
from engine.workers.rule_sync import RULE_SYNC
from tests.support.app import REPO_PACKS, settings_for

HUGE = 900_000


def api_rule(name: str = "on_push", pack: str = "ci") -> dict:
    return {
        "name": name,
        "pack": pack,
        "trigger": {"type": "core.st2.webhook", "parameters": {"url": "push"}},
        "action": {"ref": "core.noop"},
    }


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(tmp_path, packs=[REPO_PACKS], auth=True)


@pytest.fixture
def after_start(capsys):
    async def add_admin_key(client) -> None:
        capsys.readouterr()  # the first admin key printed on start
        record, key = new_api_key("admin", admin=True)
        await client.server.app[RUNTIME].store.create_api_key(record)
        client.key = key
        client.admin = {"St2-Api-Key": key}

    return add_admin_key


async def fault(response) -> str:
    assert response.status == 400, await response.text()
    return (await response.json())["faultstring"]


async def hookyard(client, *args: str) -> tuple[int, str, str]:
    """The real CLI in a subprocess, against the test server (the loop keeps serving)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HOOKYARD_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine",
        *args,
        env={
            **environ,
            "HOOKYARD_URL": str(client.make_url("")),
            "HOOKYARD_API_KEY": client.key,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 50)
    return process.returncode, out.decode(), err.decode()


async def test_api_refuses_a_huge_rule_name_with_the_field_and_the_limit(client):
    response = await client.post("/api/v1/rules", json=api_rule("a" * HUGE), headers=client.admin)
    message = await fault(response)
    assert message.startswith("invalid rule: name: name is 900,000 characters long")
    assert f"the limit is {MAX_NAME_CHARS} characters" in message
    assert len(message) < 500  # the name is not echoed back
    response = await client.post(
        "/api/v1/rules", json=api_rule(pack="p" * 256), headers=client.admin
    )
    assert "pack is 256 characters long" in await fault(response)
    longest = api_rule("n" * MAX_NAME_CHARS)
    assert (await client.post("/api/v1/rules", json=longest, headers=client.admin)).status == 201


async def test_a_huge_rule_stored_earlier_is_deleted_by_id_through_the_api(client, caplog):
    runtime = client.server.app[RUNTIME]
    huge = api_rule("a" * HUGE)
    ref = f"ci.{'a' * HUGE}"
    await runtime.store.create_rule(ref, huge)  # as an older Hookyard accepted it
    await runtime.store.create_rule("ci.small", api_rule("small"))
    await client.server.app[RULE_SYNC].refresh()
    # It no longer loads: the listing stays small, and the log names its id.
    listing = await client.get("/api/v1/rules", headers=client.admin)
    assert len(await listing.read()) < 10_000
    assert [rule["ref"] for rule in await listing.json()] == ["ci.small"]
    assert rule_id(ref) in caplog.text and "a" * 200 not in caplog.text

    response = await client.delete(f"/api/v1/rules/{rule_id(ref)}", headers=client.admin)
    assert response.status == 204, await response.text()
    assert [record.ref for record in await runtime.store.list_rules()] == ["ci.small"]
    # A loaded rule is reached by its id too (StackStorm's {ref_or_id}).
    small = await (await client.get("/api/v1/rules/ci.small", headers=client.admin)).json()
    assert small["id"] == rule_id("ci.small") and len(small["id"]) == 24
    by_id = await client.get(f"/api/v1/rules/{small['id']}", headers=client.admin)
    assert (await by_id.json())["ref"] == "ci.small"
    put = await client.put(
        f"/api/v1/rules/{small['id']}", json={"enabled": False}, headers=client.admin
    )
    assert put.status == 200 and (await put.json())["enabled"] is False


async def test_cli_deletes_a_huge_stored_rule_by_id(client):
    runtime = client.server.app[RUNTIME]
    ref = f"ci.{'b' * HUGE}"
    await runtime.store.create_rule(ref, api_rule("b" * HUGE))
    code, _, err = await hookyard(client, "rule", "delete", rule_id(ref))
    assert code == 0, err
    assert await runtime.store.list_rules() == []
    # A ref too long for any rule is refused before a request is made, pointing at the id.
    code, _, err = await hookyard(client, "rule", "delete", "ci." + "c" * 600)
    assert code != 0
    assert f"the limit is {MAX_REF_CHARS} characters" in err and "id" in err


async def test_api_key_names_are_bounded(client):
    response = await client.post("/api/v1/apikeys", json={"name": "k" * 256}, headers=client.admin)
    message = await fault(response)
    assert "'name' is 256 characters long" in message and "255" in message
    response = await client.post(
        "/api/v1/apikeys",
        json={"name": "ok", "webhooks": ["w" * 256]},
        headers=client.admin,
    )
    assert "an item of 'webhooks' is 256 characters long" in await fault(response)


async def test_datastore_key_names_are_bounded(client):
    response = await client.put(
        f"/api/v1/keys/{'k' * 513}", json={"value": "v"}, headers=client.admin
    )
    message = await fault(response)
    assert "datastore key name is 513 characters long; the limit is 512" in message
    ok = await client.put(f"/api/v1/keys/{'k' * 512}", json={"value": "v"}, headers=client.admin)
    assert ok.status == 200, await ok.text()


async def test_st2_webhook_trigger_refs_are_bounded(client):
    response = await client.post(
        "/webhooks/st2", json={"trigger": "x." + "t" * HUGE, "payload": {}}, headers=client.admin
    )
    message = await fault(response)
    assert '"trigger" is 900,002 characters long' in message and len(message) < 500
