"""Whose values a workflow's commands may be made of (engine.workers.workflows.
inputs_trusted): a person who runs a workflow through the API gives it a command as
StackStorm's examples do (`core.local cmd=<% ctx(cmd) %>`); a webhook sender whose
payload a rule passes on never does — nor through a re-run of that workflow. The real
app, a real SQLite file or PostgreSQL (conftest.py), real subprocesses."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from engine.config import AuthSettings, Settings, StoreSettings, WorkerSettings
from tests.support.app import app_client, write_rules

WORKFLOW = """\
version: 1.0
input:
  - cmd
tasks:
  run:
    action: core.local cmd=<% ctx(cmd) %>
    next:
      - publish:
          - out: <% result().stdout %>
output:
  - out: <% ctx(out) %>
"""
RULE = """\
name: run_from_webhook
pack: trust
trigger: {type: core.st2.webhook, parameters: {url: run}}
action:
  ref: trust.runcmd
  parameters:
    cmd: "{{ trigger.body.cmd }}"
"""
ENDED = ("succeeded", "failed", "canceled", "timeout", "abandoned")


@pytest.fixture
def settings(tmp_path: Path, store_url: str) -> Settings:
    pack = tmp_path / "packs" / "trust"
    (pack / "actions" / "workflows").mkdir(parents=True)
    (pack / "pack.yaml").write_text("name: trust\nversion: 1.0.0\ndescription: t\nauthor: t\n")
    (pack / "actions" / "workflows" / "runcmd.yaml").write_text(WORKFLOW)
    (pack / "actions" / "runcmd.yaml").write_text(
        "name: runcmd\nrunner_type: orquesta\nentry_point: workflows/runcmd.yaml\n"
        "parameters:\n  cmd:\n    type: string\n    required: true\n"
    )
    return Settings(
        store=StoreSettings(url=store_url),
        workers=WorkerSettings(poll_interval=0.1),
        auth=AuthSettings(enabled=False),
        rules_dirs=(str(write_rules(tmp_path / "rules", {"run": RULE})),),
        packs_dirs=(str(tmp_path / "packs"),),
        roles=("api", "rules", "actions", "workflows"),
        base_dir=str(tmp_path),
    )


async def ended(client, execution_id: str) -> dict:
    deadline = time.monotonic() + 60
    while True:
        data = await (await client.get(f"/api/v1/executions/{execution_id}")).json()
        if data["status"] in ENDED:
            return data
        assert time.monotonic() < deadline, data
        await asyncio.sleep(0.05)


async def test_a_persons_workflow_runs_the_command_a_senders_does_not(settings, tmp_path):
    marker = tmp_path / "ran"
    async with app_client(settings) as client:
        asked = await client.post(
            "/api/v1/executions",
            json={"action": "trust.runcmd", "parameters": {"cmd": "echo from a person"}},
        )
        by_person = await ended(client, (await asked.json())["id"])
        assert by_person["status"] == "succeeded", by_person["result"]
        assert by_person["result"]["output"]["out"].strip() == "from a person"

        posted = await client.post("/webhooks/run", json={"cmd": f"touch {marker}"})
        assert posted.status == 202
        instance = (await posted.json())["id"]
        deadline = time.monotonic() + 60
        while not (
            found := await (
                await client.get("/api/v1/executions", params={"trigger_instance": instance})
            ).json()
        ):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        by_sender = await ended(client, found[0]["id"])
        assert by_sender["status"] == "failed"
        messages = [e["message"] for e in by_sender["result"]["errors"]]
        assert any("would choose the program" in m for m in messages), messages
        assert not marker.exists()

        # Re-running the sender's workflow repeats the sender's values: still data.
        again = await client.post(f"/api/v1/executions/{by_sender['id']}/re_run", json={})
        assert again.status == 201, await again.text()
        rerun = await ended(client, (await again.json())["id"])
        assert rerun["status"] == "failed"
        messages = [e["message"] for e in rerun["result"]["errors"]]
        assert any("would choose the program" in m for m in messages), messages
        assert not marker.exists()
