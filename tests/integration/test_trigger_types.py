"""Trigger types registered by packs (`triggers/*.yaml`, sensors' `trigger_types`) in a
real app on a real SQLite file: listed in StackStorm's shapes, and `/webhooks/st2` checks a
payload against the type's payload_schema and accepts a registered type no rule listens to.
StackStorm's own examples files are the test data (tests/support/st2_examples)."""

from __future__ import annotations

from pathlib import Path

from engine.http.context import RUNTIME
from tests.support.app import REPO_ROOT, app_client, settings_for
from tests.support.packs import write_pack

ST2_EXAMPLES = REPO_ROOT / "tests" / "support" / "st2_examples"
TIMER_RULE = """\
name: every_minute
pack: t
trigger: {type: core.st2.IntervalTimer, parameters: {unit: minutes, delta: 1}}
action: {ref: core.noop}
"""


async def test_examples_trigger_types_are_listed_in_stackstorm_shapes(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, packs=[ST2_EXAMPLES])
    async with app_client(settings) as client:
        assert client.server.app[RUNTIME].load_errors == []
        listing = await (await client.get("/api/v1/triggertypes")).json()
        refs = {item["ref"] for item in listing}
        assert {"examples.fibonacci", "examples.sample_trigger"} <= refs
        assert {"core.st2.webhook", "core.st2.generic.actiontrigger"} <= refs
        fib = await (await client.get("/api/v1/triggertypes/examples.fibonacci")).json()
        assert fib["uid"] == "trigger_type:examples:fibonacci"
        assert (fib["name"], fib["pack"]) == ("fibonacci", "examples")
        assert fib["payload_schema"]["properties"]["count"] == {"type": "number"}
        assert fib["metadata_file"] == "sensors/fibonacci_sensor.yaml"
        missing = await client.get("/api/v1/triggertypes/examples.nope")
        assert missing.status == 404
        sensors = await (await client.get("/api/v1/sensortypes")).json()
        assert [(s["ref"], s["enabled"], s["poll_interval"]) for s in sensors] == [
            ("examples.FibonacciSensor", True, 20.0)
        ]
        assert sensors[0]["trigger_types"] == ["examples.fibonacci"]
        # A parameterless type is a trigger of its own name, as StackStorm shadows it.
        triggers = await (await client.get("/api/v1/triggers")).json()
        by_ref = {t["ref"]: t for t in triggers}
        assert by_ref["examples.fibonacci"]["type"] == "examples.fibonacci"
        assert "id" in by_ref["examples.fibonacci"]


async def test_a_registered_type_is_accepted_without_a_rule_and_its_schema_enforced(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, packs=[ST2_EXAMPLES])
    async with app_client(settings) as client:
        good = await client.post(
            "/webhooks/st2", json={"trigger": "examples.fibonacci", "payload": {"count": 3}}
        )
        assert good.status == 202, await good.text()
        stored = await client.get(f"/api/v1/triggerinstances/{(await good.json())['id']}")
        instance = await stored.json()
        assert (instance["trigger"], instance["payload"]) == ("examples.fibonacci", {"count": 3})
        # Properties the schema does not name are allowed (JSON schema allows them).
        extra = await client.post(
            "/webhooks/st2", json={"trigger": "examples.fibonacci", "payload": {"other": "x"}}
        )
        assert extra.status == 202
        bad = await client.post(
            "/webhooks/st2",
            json={"trigger": "examples.fibonacci", "payload": {"count": "three"}},
        )
        assert bad.status == 400
        fault = (await bad.json())["faultstring"]
        assert "examples.fibonacci" in fault and "'count'" in fault and "number" in fault
        listing = await client.get("/api/v1/triggerinstances")
        assert listing.headers["X-Total-Count"] == "2"  # the refused one is not stored


async def test_required_fields_are_named_and_huge_values_not_echoed(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    write_pack(
        packs,
        "ci",
        {
            "triggers/deployed.yaml": """\
                name: deployed
                payload_schema:
                  type: object
                  required: [service]
                  properties:
                    service: {type: string}
                    build: {type: object, properties: {number: {type: integer}}}
            """
        },
    )
    async with app_client(settings_for(tmp_path, packs=[packs])) as client:
        missing = await client.post("/webhooks/st2", json={"trigger": "ci.deployed"})
        assert missing.status == 400
        assert "field 'service'" in (await missing.json())["faultstring"]
        nested = await client.post(
            "/webhooks/st2",
            json={
                "trigger": "ci.deployed",
                "payload": {"service": "api", "build": {"number": "x" * 100_000}},
            },
        )
        assert nested.status == 400
        fault = (await nested.json())["faultstring"]
        assert "field 'build.number'" in fault
        assert len(fault) < 1000


async def test_broken_trigger_files_are_reported_and_the_rest_loads(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    write_pack(
        packs,
        "ci",
        {
            "triggers/good.yaml": "name: good\n",
            "triggers/typo.yaml": "name: typo\npayload_shema: {}\n",
            "triggers/schema.yaml": "name: schema\npayload_schema: {type: 12}\n",
            "triggers/other_pack.yaml": "name: x\npack: elsewhere\n",
            "triggers/again.yaml": "name: good\n",
        },
    )
    async with app_client(settings_for(tmp_path, packs=[packs])) as client:
        runtime = client.server.app[RUNTIME]
        messages = sorted(str(e) for e in runtime.load_errors)
        assert len(messages) == 4, messages
        text = "\n".join(messages)
        assert "unknown trigger type field 'payload_shema'" in text
        assert "payload_schema is not a valid JSON schema" in text
        assert "says pack 'elsewhere'" in text
        assert "already defined" in text
        assert [t.ref for t in runtime.packs.trigger_types() if t.pack == "ci"] == ["ci.good"]


async def test_timers_and_rule_triggers_are_listed(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, rules={"timer": TIMER_RULE})
    async with app_client(settings) as client:
        timers = await (await client.get("/api/v1/timers")).json()
        assert len(timers) == 1
        timer = timers[0]
        assert timer["type"] == "core.st2.IntervalTimer"
        assert timer["parameters"] == {"unit": "minutes", "delta": 1}
        assert timer["uid"].startswith("trigger:core:st2.IntervalTimer:")
        one = await client.get(f"/api/v1/timers/{timer['id']}")
        assert (await one.json())["ref"] == timer["ref"]
        filtered = await client.get("/api/v1/timers?timer_type=core.st2.CronTimer")
        assert await filtered.json() == []
        triggers = await (await client.get("/api/v1/triggers")).json()
        assert timer["ref"] in {t["ref"] for t in triggers}
