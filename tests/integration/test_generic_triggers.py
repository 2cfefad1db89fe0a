"""The generic triggers of finished executions, on a real SQLite file and on PostgreSQL:
core.st2.generic.actiontrigger and notifytrigger instances in StackStorm's payload shape,
written in the transaction that finishes the execution and only when a rule listens; a
rule that re-fires itself through its own action stops at rules.max_trigger_depth with
the reason on its enforcement."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import StoreSettings
from engine.model.generic_triggers import ACTION_TRIGGER, NOTIFY_TRIGGER
from engine.model.records import SUCCEEDED, NewExecution, NewTriggerInstance
from engine.store.base import Store
from tests.support.app import app_client, settings_for
from tests.support.packs import write_pack
from tests.support.postgres import truncate_all
from tests.support.waiting import get_json, wait_execution, wait_until

ROLES = ("api", "rules", "actions")
ON_ACTION = """\
name: on_echo
pack: t
trigger: {type: core.st2.generic.actiontrigger}
criteria:
  trigger.action_ref: {type: equals, pattern: core.echo}
action: {ref: core.noop}
"""
LOOP = """\
name: loop
pack: t
trigger: {type: core.st2.generic.actiontrigger}
action: {ref: core.noop}
"""
ON_NOTIFY = """\
name: on_notify
pack: t
trigger: {type: core.st2.generic.notifytrigger}
criteria:
  trigger.route: {type: equals, pattern: slack}
action: {ref: core.noop}
"""
NOTIFYING_ACTION = """\
name: shout
runner_type: noop
description: succeeds and notifies
notify:
  on-complete: {message: done, routes: [audit]}
  on-success: {message: "it worked", data: {team: ops}, routes: [slack]}
  on-failure: {message: broken, routes: [pager]}
"""


@pytest.fixture
async def store_url(store_url: str) -> str:
    """The test's database, empty (the PostgreSQL one is shared by the session)."""
    if store_url.startswith("postgresql://"):
        await truncate_all(store_url)
    return store_url


def app_settings(tmp_path: Path, store_url: str, rules: dict[str, str], **fields):
    return settings_for(
        tmp_path, rules=rules, roles=ROLES, store=StoreSettings(url=store_url), **fields
    )


async def run(client, action: str, parameters: dict | None = None) -> dict:
    response = await client.post(
        "/api/v1/executions", json={"action": action, "parameters": parameters or {}}
    )
    assert response.status == 201, await response.text()
    return await wait_execution(client, (await response.json())["id"])


async def instances(client, trigger: str) -> list[dict]:
    return await get_json(client, "/api/v1/triggerinstances", trigger=trigger)


async def test_a_finished_execution_fires_the_action_trigger_a_rule_listens_to(
    tmp_path: Path, store_url: str
) -> None:
    settings = app_settings(tmp_path, store_url, {"on_echo": ON_ACTION})
    async with app_client(settings) as client:
        echoed = await run(client, "core.echo", {"message": "hi"})
        assert echoed["status"] == SUCCEEDED
        fired = await wait_until(lambda: instances(client, ACTION_TRIGGER), "an action trigger")
        [instance] = [i for i in fired if i["payload"]["execution_id"] == echoed["id"]]
        payload = instance["payload"]
        assert payload["execution_id"] == echoed["id"]
        assert (payload["status"], payload["action_ref"], payload["action_name"]) == (
            SUCCEEDED,
            "core.echo",
            "echo",
        )
        assert payload["runner_ref"] == "local-shell-cmd"
        assert payload["parameters"] == {"message": "hi"}
        assert payload["result"]["stdout"].strip() == "hi"
        assert payload["start_timestamp"]
        noop = await wait_execution(client, trigger_instance=instance["id"])
        assert noop["action"]["ref"] == "core.noop"
        # The rule's own core.noop finishing fires the trigger too; its criteria skip it.
        await wait_until(
            lambda: _count_at_least(client, ACTION_TRIGGER, 2), "the noop's action trigger"
        )


async def _count_at_least(client, trigger: str, count: int) -> bool:
    return len(await instances(client, trigger)) >= count


async def test_no_rule_listening_means_no_generic_instance(tmp_path: Path, store_url: str):
    settings = app_settings(tmp_path, store_url, {"on_notify": ON_NOTIFY})
    async with app_client(settings) as client:
        await run(client, "core.echo", {"message": "hi"})
        assert await instances(client, ACTION_TRIGGER) == []
        # core.echo has no notify: a rule on the notify trigger writes nothing for it.
        assert await instances(client, NOTIFY_TRIGGER) == []


async def test_a_rule_re_firing_itself_stops_at_the_configured_depth(
    tmp_path: Path, store_url: str
) -> None:
    settings = app_settings(tmp_path, store_url, {"loop": LOOP}).replace(
        **{"rules.max_trigger_depth": 3}
    )
    async with app_client(settings) as client:
        await run(client, "core.noop")

        async def stopped() -> list[dict]:
            enforcements = await get_json(client, "/api/v1/ruleenforcements")
            return [e for e in enforcements if e.get("failure_reason")]

        [failure] = await wait_until(stopped, "the loop stopped", timeout=30)
        assert "rules.max_trigger_depth (3)" in failure["failure_reason"]
        executions = await get_json(client, "/api/v1/executions")
        # The first run, then one per level of depth 1..3; depth 4 is refused.
        assert len(executions) == 4
        depths = sorted(e["context"].get("trigger_depth", 0) for e in executions)
        assert depths == [0, 1, 2, 3]


async def test_notify_routes_fire_one_notify_trigger_each(tmp_path: Path, store_url: str):
    packs = tmp_path / "packs"
    write_pack(packs, "n", {"actions/shout.yaml": NOTIFYING_ACTION})
    settings = app_settings(tmp_path, store_url, {"on_notify": ON_NOTIFY}, packs_dirs=(str(packs),))
    async with app_client(settings) as client:
        shouted = await run(client, "n.shout")
        found = await wait_until(lambda: instances(client, NOTIFY_TRIGGER), "notify triggers")
        by_route = {i["payload"]["route"]: i["payload"] for i in found}
        assert set(by_route) == {"audit", "slack"}  # on-complete and on-success, no failure
        slack = by_route["slack"]
        assert (slack["message"], slack["data"], slack["channel"]) == (
            "it worked",
            {"team": "ops"},
            "slack",
        )
        assert (slack["execution_id"], slack["action_ref"]) == (shouted["id"], "n.shout")
        assert slack["end_timestamp"]
        slack_instance = next(i for i in found if i["payload"]["route"] == "slack")
        noop = await wait_execution(client, trigger_instance=slack_instance["id"])
        assert noop["action"]["ref"] == "core.noop"


async def test_generic_instances_commit_with_the_finish_or_not_at_all(store: Store) -> None:
    new = await store.create_execution(NewExecution("core.noop", {}))
    [claimed] = await store.claim_executions(10, 30)

    def unstorable(finished):
        # A payload no store can encode: the whole finishing transaction must fail.
        return [NewTriggerInstance(trigger=ACTION_TRIGGER, payload={"x": "\ud800"})]

    with pytest.raises(Exception, match="surrogate"):
        await store.finish_execution(new.id, claimed.lease_token, SUCCEEDED, {}, unstorable)
    assert (await store.get_execution(new.id)).status != SUCCEEDED

    def one(finished):
        return [NewTriggerInstance(trigger=ACTION_TRIGGER, payload={"id": finished.id})]

    done = await store.finish_execution(new.id, claimed.lease_token, SUCCEEDED, {}, one)
    assert done.status == SUCCEEDED
    [stored] = await store.claim_trigger_instances(10, 30)
    assert (stored.trigger, stored.payload) == (ACTION_TRIGGER, {"id": new.id})
