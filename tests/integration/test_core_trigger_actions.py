"""The core actions StackStorm users call, run for real by the actions worker on a real
SQLite file: core.inject_trigger and core.announcement store trigger instances that rules
fire on (payload_schema checked as /webhooks/st2 checks it), core.uuid, core.pause and
core.error run as StackStorm's do."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from engine.model.records import FAILED, SUCCEEDED
from tests.support.app import settings_for
from tests.support.packs import write_pack
from tests.support.waiting import get_json, wait_execution, wait_until

DEPLOYED = """\
name: deployed
payload_schema:
  type: object
  required: [service]
  properties:
    service: {type: string}
"""
ON_DEPLOYED = """\
name: on_deployed
pack: t
trigger: {type: ci.deployed}
action: {ref: core.noop}
"""
ON_ANNOUNCEMENT = """\
name: on_announcement
pack: t
trigger: {type: core.st2.announcement}
criteria:
  trigger.message.level: {type: equals, pattern: high}
action: {ref: core.noop}
"""


@pytest.fixture
def settings(tmp_path: Path):
    packs = tmp_path / "packs"
    write_pack(packs, "ci", {"triggers/deployed.yaml": DEPLOYED})
    return settings_for(
        tmp_path,
        rules={"deployed": ON_DEPLOYED, "announcement": ON_ANNOUNCEMENT},
        packs=[packs],
        roles=("api", "rules", "actions"),
    )


async def run(client, action: str, parameters: dict) -> dict:
    response = await client.post(
        "/api/v1/executions", json={"action": action, "parameters": parameters}
    )
    assert response.status == 201, await response.text()
    return await wait_execution(client, (await response.json())["id"])


async def test_inject_trigger_stores_an_instance_a_rule_fires_on(client) -> None:
    injected = await run(
        client,
        "core.inject_trigger",
        {"trigger": "ci.deployed", "payload": {"service": "api"}, "trace_tag": "t-1"},
    )
    assert injected["status"] == SUCCEEDED, injected["result"]
    instance_id = injected["result"]["trigger_instance"]
    instance = await get_json(client, f"/api/v1/triggerinstances/{instance_id}")
    assert (instance["trigger"], instance["payload"]) == ("ci.deployed", {"service": "api"})
    noop = await wait_execution(client, trigger_instance=instance_id)
    assert noop["action"]["ref"] == "core.noop"


@pytest.mark.parametrize(
    ("parameters", "reason"),
    [
        ({"trigger": "ci.deployed", "payload": {"service": 5}}, "field 'service'"),
        ({"trigger": "ci.deployed", "payload": {}}, "field 'service'"),
        ({"trigger": "nobody.listens", "payload": {}}, "unknown trigger type 'nobody.listens'"),
    ],
)
async def test_inject_trigger_refuses_what_the_webhook_refuses(client, parameters, reason):
    refused = await run(client, "core.inject_trigger", parameters)
    assert refused["status"] == FAILED
    assert reason in refused["result"]["error"]
    listing = await client.get("/api/v1/triggerinstances")
    assert listing.headers["X-Total-Count"] == "0"


async def test_announcement_is_a_trigger_rules_act_on(client) -> None:
    announced = await run(client, "core.announcement", {"message": {"level": "high"}})
    assert announced["status"] == SUCCEEDED, announced["result"]
    instance_id = announced["result"]["trigger_instance"]
    instance = await get_json(client, f"/api/v1/triggerinstances/{instance_id}")
    assert instance["trigger"] == "core.st2.announcement"
    assert instance["payload"] == {"route": "general", "message": {"level": "high"}}
    await wait_execution(client, trigger_instance=instance_id)


async def test_uuid_pause_and_error(client, tmp_path: Path) -> None:
    made = await run(client, "core.uuid", {})
    assert made["status"] == SUCCEEDED, made["result"]
    assert uuid.UUID(made["result"]["result"]).version == 4
    one = await run(client, "core.uuid", {"uuid_type": "uuid1"})
    assert uuid.UUID(one["result"]["result"]).version == 1
    paused = await run(client, "core.pause", {"max_pause": 0})
    assert paused["status"] == SUCCEEDED, paused["result"]
    marker = tmp_path / "PWNED"
    errored = await run(client, "core.error", {"message": f"bad; touch {marker}"})
    assert errored["status"] == SUCCEEDED  # StackStorm's core.error only echoes to stderr
    assert errored["result"]["stderr"].strip() == f"bad; touch {marker}"
    assert not marker.exists()


async def test_the_rule_fired_by_an_injected_trigger_sees_its_payload(client) -> None:
    await run(
        client, "core.inject_trigger", {"trigger": "ci.deployed", "payload": {"service": "x"}}
    )

    async def enforced():
        return await get_json(client, "/api/v1/ruleenforcements")

    [enforcement] = await wait_until(enforced, "an enforcement")
    assert enforcement["rule"]["ref"] == "t.on_deployed"
