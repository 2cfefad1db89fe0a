"""A trigger instance whose decision the store refuses ends processing_failed, not re-tried
for ever: its failed enforcements say why."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from engine.config import AuthSettings, Settings, StoreSettings, WorkerSettings
from engine.http.app import create_app

RULE = """\
name: to_float
pack: t
trigger: {type: core.st2.webhook, parameters: {url: numbers}}
action:
  ref: core.noop
  parameters:
    # A payload "nan" renders to float NaN, which no store can hold as JSON.
    value: "{{ trigger.body.x | float }}"
"""


def app_settings(tmp_path: Path, **workers) -> Settings:
    """One process with the api and rules roles on a SQLite file, the rule above loaded."""
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "r.yaml").write_text(textwrap.dedent(RULE))
    return Settings(
        store=StoreSettings(url=f"sqlite:///{tmp_path}/h.db"),
        auth=AuthSettings(enabled=False),
        workers=WorkerSettings(poll_interval=0.05, **workers),
        rules_dirs=(str(rules),),
        packs_dirs=(),
        roles=("api", "rules"),
        base_dir=str(tmp_path),
    )


async def test_an_unstorable_decision_marks_the_instance_processing_failed(tmp_path):
    settings = app_settings(tmp_path, lease_seconds=0.5)
    async with TestClient(TestServer(create_app(settings))) as client:
        good = await (await client.post("/webhooks/numbers", json={"x": "1.5"})).json()
        bad = await (await client.post("/webhooks/numbers", json={"x": "nan"})).json()
        for _ in range(300):
            instance = await (await client.get(f"/api/v1/triggerinstances/{bad['id']}")).json()
            if instance["status"] not in ("pending", "processing"):
                break
            await asyncio.sleep(0.03)
        assert instance["status"] == "processing_failed"
        (enforcement,) = await (
            await client.get("/api/v1/ruleenforcements", params={"trigger_instance": bad["id"]})
        ).json()
        assert enforcement["status"] == "failed"
        assert "could not be stored" in enforcement["failure_reason"]
        assert enforcement["execution_id"] is None
        ok = await (await client.get(f"/api/v1/triggerinstances/{good['id']}")).json()
        assert ok["status"] == "processed"
        # Not claimed again: after several lease periods it is still the one failed record.
        await asyncio.sleep(1.2)
        again = await client.get("/api/v1/ruleenforcements", params={"trigger_instance": bad["id"]})
        assert again.headers["X-Total-Count"] == "1"


async def test_an_instance_claimed_past_the_limit_is_failed_without_evaluation(tmp_path):
    """Workers that died holding an instance (a rule crashing the process) leave claims
    without decisions; past workers.rules_max_claims it is not evaluated again."""
    from engine.model.records import NewTriggerInstance
    from engine.store import create_store

    settings = app_settings(tmp_path, rules_max_claims=2)
    store = create_store(settings.store, tmp_path)
    await store.open()
    doomed = NewTriggerInstance(
        trigger="core.st2.webhook",
        payload={"headers": {}, "headers_lower": {}, "body": {"x": "1"}},
        webhook="numbers",
    )
    await store.add_trigger_instances([doomed])
    for _ in range(3):  # three workers claimed it and died: their leases ran out
        (claimed,) = await store.claim_trigger_instances(10, 0.01)
        await asyncio.sleep(0.03)
    assert claimed.claims == 3
    await store.close()

    async with TestClient(TestServer(create_app(settings))) as client:
        fresh = await (await client.post("/webhooks/numbers", json={"x": "2"})).json()
        for _ in range(300):
            states = [
                (await (await client.get(f"/api/v1/triggerinstances/{i}")).json())["status"]
                for i in (doomed.id, fresh["id"])
            ]
            if not {"pending", "processing"} & set(states):
                break
            await asyncio.sleep(0.03)
        assert states == ["processing_failed", "processed"]
        # Not evaluated: no enforcement and no execution for it; the fresh one has its own.
        none = await client.get("/api/v1/ruleenforcements", params={"trigger_instance": doomed.id})
        assert none.headers["X-Total-Count"] == "0"
        one = await client.get("/api/v1/ruleenforcements", params={"trigger_instance": fresh["id"]})
        assert one.headers["X-Total-Count"] == "1"
