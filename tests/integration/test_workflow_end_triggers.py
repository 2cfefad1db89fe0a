"""The generic triggers of ends that no action worker records, on a real SQLite file and
on PostgreSQL: an Orquesta workflow's and an action chain's end, an execution canceled
before it ran, one abandoned or settled after its worker died — each fires
core.st2.generic.actiontrigger (and the notify trigger for its `notify`) once, in the
transaction of the end. And a chain's `skip_notify` and links' `notify` (StackStorm's)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from engine.config import StoreSettings
from engine.model.generic_triggers import ACTION_TRIGGER, NOTIFY_TRIGGER
from engine.model.records import NewExecution, NewTriggerInstance, utcnow
from engine.store.base import Store
from tests.support.app import app_client, settings_for
from tests.support.packs import write_pack
from tests.support.postgres import truncate_all
from tests.support.waiting import get_json, wait_execution, wait_until

ON_FLOW = """\
name: on_flow
pack: t
trigger: {type: core.st2.generic.actiontrigger}
criteria:
  trigger.action_name: {type: equals, pattern: flow}
action: {ref: core.noop}
"""
ON_ANY = """\
name: on_any
pack: t
trigger: {type: core.st2.generic.actiontrigger}
action: {ref: core.noop}
"""
ON_NOTIFY = """\
name: on_notify
pack: t
trigger: {type: core.st2.generic.notifytrigger}
action: {ref: core.noop}
"""
PACK = {
    "actions/flow.yaml": """\
        name: flow
        runner_type: orquesta
        entry_point: workflows/flow.yaml
        parameters:
          fail: {type: boolean, default: false}
        notify:
          on-complete: {message: flow ended, routes: [flows]}
        """,
    "actions/workflows/flow.yaml": """\
        version: 1.0
        input:
          - fail
        tasks:
          one:
            action: n.loud
            next:
              - when: <% ctx(fail) %>
                do: fail
        output:
          - done: true
        """,
    # An action with its own notify: as a workflow task it notifies nothing (StackStorm).
    "actions/loud.yaml": """\
        name: loud
        runner_type: noop
        notify:
          on-complete: {message: loud, routes: [loud]}
        """,
    "actions/chained.yaml": """\
        name: chained
        runner_type: action-chain
        entry_point: chains/chained.yaml
        parameters:
          skip_notify: {default: [quiet]}
        notify:
          on-complete: {message: chain, routes: [chains]}
        """,
    "actions/chains/chained.yaml": """\
        chain:
          - name: inherits
            ref: core.noop
            on-success: own
          - name: own
            ref: core.noop
            notify:
              on-complete: {message: link, routes: [links]}
            on-success: quiet
          - name: quiet
            ref: core.noop
            on-success: loud
          - name: loud
            ref: n.loud
        """,
}


@pytest.fixture
async def store_url(store_url: str) -> str:
    """The test's database, empty (the PostgreSQL one is shared by the session)."""
    if store_url.startswith("postgresql://"):
        await truncate_all(store_url)
    return store_url


def app_settings(tmp_path: Path, store_url: str, rules: dict, roles=None):
    packs = tmp_path / "packs"
    if not (packs / "n").exists():
        write_pack(packs, "n", PACK)
    return settings_for(
        tmp_path,
        rules=rules,
        roles=roles or ("api", "rules", "actions", "workflows"),
        store=StoreSettings(url=store_url),
        packs_dirs=(str(packs),),
    )


async def start(client, action: str, **parameters) -> str:
    reply = await client.post(
        "/api/v1/executions", json={"action": action, "parameters": parameters}
    )
    assert reply.status == 201, await reply.text()
    return (await reply.json())["id"]


async def fired_for(client, trigger: str, execution_id: str) -> list[dict]:
    found = await get_json(client, "/api/v1/triggerinstances", trigger=trigger, limit=-1)
    return [i for i in found if i["payload"]["execution_id"] == execution_id]


async def test_a_workflow_end_fires_the_action_trigger_once_and_its_rule(
    tmp_path: Path, store_url: str
) -> None:
    settings = app_settings(tmp_path, store_url, {"on_flow": ON_FLOW})
    async with app_client(settings) as client:
        for fail, status in ((False, "succeeded"), (True, "failed")):
            flow = await wait_execution(client, await start(client, "n.flow", fail=fail))
            assert flow["status"] == status
            [instance] = await wait_until(
                lambda flow=flow: fired_for(client, ACTION_TRIGGER, flow["id"]), "the trigger"
            )
            payload = instance["payload"]
            assert (payload["status"], payload["action_ref"], payload["runner_ref"]) == (
                status,
                "n.flow",
                "orquesta",
            )
            assert payload["result"] == flow["result"]
            ran = await wait_execution(client, trigger_instance=instance["id"])
            assert ran["action"]["ref"] == "core.noop"
        # Once per end: the rule ran once for each workflow, and no more.
        await asyncio.sleep(0.5)
        enforcements = await get_json(client, "/api/v1/ruleenforcements", limit=-1)
        assert len([e for e in enforcements if e["rule"]["ref"] == "t.on_flow"]) == 2


async def test_notify_of_a_workflow_and_a_chain_and_chain_skip_notify(
    tmp_path: Path, store_url: str
) -> None:
    settings = app_settings(tmp_path, store_url, {"on_notify": ON_NOTIFY})
    async with app_client(settings) as client:
        flow = await wait_execution(client, await start(client, "n.flow"))
        chain = await wait_execution(client, await start(client, "n.chained"))
        assert (flow["status"], chain["status"]) == ("succeeded", "succeeded"), chain["result"]

        async def routes() -> list[tuple[str, str]] | None:
            found = await get_json(client, "/api/v1/triggerinstances", trigger=NOTIFY_TRIGGER)
            seen = sorted((i["payload"]["action_ref"], i["payload"]["route"]) for i in found)
            return seen if len(seen) >= 5 else None

        await wait_until(routes, "the notify triggers")
        await asyncio.sleep(0.5)  # nothing else comes
        # The workflow and the chain notify at their end. The workflow's task (n.loud)
        # does not; the chain's links do: `inherits` the chain's notify, `own` its link's,
        # `loud` its action's; `quiet` is in skip_notify.
        assert await routes() == [
            ("core.noop", "chains"),
            ("core.noop", "links"),
            ("n.chained", "chains"),
            ("n.flow", "flows"),
            ("n.loud", "loud"),
        ]
        children = await get_json(client, "/api/v1/executions", parent=chain["id"])
        notify = {c["context"]["chain"]["name"]: c["context"].get("notify") for c in children}
        assert notify == {
            "inherits": {"on-complete": {"message": "chain", "routes": ["chains"]}},
            "own": {"on-complete": {"message": "link", "routes": ["links"]}},
            "quiet": {},
            "loud": None,
        }


async def test_a_chain_end_and_a_cancel_before_the_run_fire_the_action_trigger(
    tmp_path: Path, store_url: str
) -> None:
    settings = app_settings(tmp_path, store_url, {"on_any": ON_ANY})
    async with app_client(settings) as client:
        chain = await wait_execution(client, await start(client, "n.chained"))
        [instance] = await wait_until(
            lambda: fired_for(client, ACTION_TRIGGER, chain["id"]), "the chain's trigger"
        )
        assert instance["payload"]["runner_ref"] == "action-chain"
        assert instance["payload"]["status"] == "succeeded"

    # No actions role: the execution stays requested until canceled.
    settings = app_settings(tmp_path, store_url, {"on_any": ON_ANY}, roles=("api", "rules"))
    async with app_client(settings) as client:
        waiting = await start(client, "core.noop")
        assert (await client.delete(f"/api/v1/executions/{waiting}")).status == 200
        [instance] = await wait_until(
            lambda: fired_for(client, ACTION_TRIGGER, waiting), "the cancel's trigger"
        )
        assert instance["payload"]["status"] == "canceled"


async def test_abandoned_and_worker_gone_ends_fire_in_their_claim(store: Store) -> None:
    def source(ended):
        return [NewTriggerInstance(trigger=ACTION_TRIGGER, payload={"id": ended.id})]

    store.use_generic_triggers(source)
    lost = await store.create_execution(NewExecution("core.noop", {}))
    stopped = await store.create_execution(NewExecution("core.noop", {}))
    claimed = {e.id: e for e in await store.claim_executions(10, 0.05, max_attempts=1)}
    await store.start_execution(lost.id, claimed[lost.id].lease_token)
    await store.start_execution(stopped.id, claimed[stopped.id].lease_token)
    await store.request_cancel(stopped.id)  # canceling: its worker must confirm
    await asyncio.sleep(1.1)  # both leases expire (PostgreSQL's clock counts seconds)
    assert await store.claim_executions(10, 30, max_attempts=1) == []
    assert (await store.get_execution(lost.id)).status == "abandoned"
    assert (await store.get_execution(stopped.id)).status == "canceled"
    stored = await store.claim_trigger_instances(10, 30)
    assert sorted(i.payload["id"] for i in stored) == sorted([lost.id, stopped.id])


async def test_a_cancel_whose_trigger_cannot_be_stored_does_not_happen(store: Store) -> None:
    def unstorable(ended):
        return [NewTriggerInstance(trigger=ACTION_TRIGGER, payload={"x": "\ud800"})]

    store.use_generic_triggers(unstorable)
    waiting = await store.create_execution(NewExecution("core.noop", {}))
    with pytest.raises(Exception, match="surrogate"):
        await store.request_cancel(waiting.id)
    assert (await store.get_execution(waiting.id)).status == "requested"
    assert utcnow() - waiting.created_at < timedelta(minutes=1)
