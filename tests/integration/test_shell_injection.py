"""Issue 15 item 1 end to end: webhook -> rule -> core.local on a real SQLite file and /bin/sh.

A value in a context the quoter cannot know (here `"$(echo {{ x }})"`) never reaches the
shell: the enforcement or execution fails naming the parameter, the context and `env`.
Passing the same value through `env` runs and prints it verbatim.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.config import Settings
from tests.support.app import REPO_PACKS, settings_for
from tests.support.packs import write_pack

RULES = {
    "substitution": """\
        name: substitution
        pack: t
        trigger: {type: core.st2.webhook, parameters: {url: substitution}}
        action:
          ref: core.local
          parameters:
            cmd: 'echo "$(echo {{ trigger.body.x }})"'
        """,
    "through_env": """\
        name: through_env
        pack: t
        trigger: {type: core.st2.webhook, parameters: {url: through_env}}
        action:
          ref: core.local
          parameters:
            env: {X: "{{ trigger.body.x }}"}
            cmd: 'echo "$(echo "$X")"'
        """,
}
WRAP_ACTION = """\
    name: wrap
    runner_type: local-shell-cmd
    parameters:
      message: {type: string, required: true}
      cmd: {default: 'echo "$(echo {{ message }})"', immutable: true}
    """


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    packs = tmp_path / "packs"
    write_pack(packs, "ops", {"actions/wrap.yaml": WRAP_ACTION})
    return settings_for(
        tmp_path,
        rules=RULES,
        packs=[REPO_PACKS, packs],
        roles=("api", "rules", "actions"),
    )


async def poll(client, path: str, params: dict, done) -> object:
    # Generous: a loaded machine runs actions slowly. Not a timing assertion.
    for _ in range(1000):
        data = await (await client.get(path, params=params)).json()
        if done(data):
            return data
        await asyncio.sleep(0.03)
    raise AssertionError(f"{path} {params} never finished: {data}")


def finished(execution: dict) -> bool:
    return execution["status"] in ("succeeded", "failed", "timeout", "abandoned")


async def test_a_value_inside_a_command_substitution_never_runs(client, tmp_path):
    marker = tmp_path / "F"
    accepted = await (
        await client.post("/webhooks/substitution", json={"x": f"a; touch {marker}"})
    ).json()
    (enforcement,) = await poll(
        client, "/api/v1/ruleenforcements", {"trigger_instance": accepted["id"]}, bool
    )
    assert enforcement["status"] == "failed"
    assert enforcement["execution_id"] is None
    reason = enforcement["failure_reason"]
    assert reason.startswith(
        "action parameters did not render: parameter 'cmd': {{ trigger.body.x }} "
        "(template line 1) is inside a command substitution $(...)"
    )
    assert "pass the value through the action's env parameter" in reason
    await asyncio.sleep(0.3)
    assert not marker.exists()


async def test_the_same_value_through_env_runs_verbatim(client, tmp_path):
    marker = tmp_path / "F"
    value = f"a; touch {marker} $(touch {marker})"
    accepted = await (await client.post("/webhooks/through_env", json={"x": value})).json()
    (execution,) = await poll(
        client,
        "/api/v1/executions",
        {"trigger_instance": accepted["id"]},
        lambda items: items and finished(items[0]),
    )
    assert execution["status"] == "succeeded", execution["result"]
    assert execution["result"]["stdout"] == value
    assert not marker.exists()


async def test_an_action_metadata_template_fails_the_execution_with_the_message(client, tmp_path):
    marker = tmp_path / "F"
    created = await (
        await client.post(
            "/api/v1/executions",
            json={"action": "ops.wrap", "parameters": {"message": f"a; touch {marker}"}},
        )
    ).json()
    execution = await poll(client, f"/api/v1/executions/{created['id']}", {}, finished)
    assert execution["status"] == "failed"
    error = execution["result"]["error"]
    assert "parameter 'cmd'" in error
    assert "{{ message }} (template line 1) is inside a command substitution $(...)" in error
    assert '(env: {MESSAGE: "{{ message }}"})' in error
    assert not marker.exists()
