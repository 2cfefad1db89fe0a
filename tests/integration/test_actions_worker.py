"""The actions worker end to end: real runners, real SQLite file, a StackStorm-format pack."""

from __future__ import annotations

import asyncio
import os
import textwrap
from pathlib import Path

import pytest

from engine.config import Settings, WorkerSettings
from engine.http.context import RUNTIME
from engine.model.records import NewExecution
from tests.support.app import FAST_POLL, app_client, settings_for
from tests.support.packs import write_pack
from tests.support.waiting import wait_execution

RULE = """\
name: on_deploy
pack: t
trigger: {type: core.st2.webhook, parameters: {url: deploy}}
action:
  ref: core.local
  parameters:
    cmd: "echo deploying {{ trigger.body.service }}"
"""


def write_stackstorm_pack(root: Path) -> None:
    """A pack in StackStorm's exact layout: pack.yaml, actions/ with entry points, rules/."""
    pack = root / "ops"
    (pack / "actions").mkdir(parents=True)
    (pack / "rules").mkdir()
    (pack / "pack.yaml").write_text(
        textwrap.dedent("""\
        ---
        ref: ops
        name: ops
        description: Operations actions
        version: 1.0.0
        author: Hookyard tests
        email: tests@example.com
        """)
    )
    (pack / "actions" / "greet.yaml").write_text(
        textwrap.dedent("""\
        ---
        name: greet
        runner_type: python-script
        description: Greet someone
        enabled: true
        entry_point: greet.py
        parameters:
          who:
            type: string
            required: true
          times:
            type: integer
            default: 2
          token:
            type: string
            secret: true
        """)
    )
    (pack / "actions" / "greet.py").write_text(
        textwrap.dedent("""\
        from st2common.runners.base_action import Action


        class Greet(Action):
            def run(self, who, times, token=None):
                print("greeting", who, "with", token)
                return {"greeting": " ".join(["hello " + who] * times)}
        """)
    )
    (pack / "actions" / "never.yaml").write_text(
        textwrap.dedent("""\
        ---
        name: never
        runner_type: local-shell-cmd
        retry: never
        parameters:
          cmd: {default: "true"}
        """)
    )
    (pack / "rules" / "greet_on_hello.yaml").write_text(
        textwrap.dedent("""\
        ---
        name: greet_on_hello
        pack: ops
        trigger:
          type: core.st2.webhook
          parameters: {url: hello}
        criteria:
          trigger.body.name: {type: exists}
        action:
          ref: ops.greet
          parameters:
            who: "{{ trigger.body.name }}"
            times: "{{ trigger.body.times }}"
            token: s3cr3t-token
        """)
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    packs = tmp_path / "packs"
    write_stackstorm_pack(packs)
    return settings_for(
        tmp_path,
        rules={"deploy": RULE},
        packs=[packs],
        roles=("api", "rules", "actions"),
        workers=WorkerSettings(poll_interval=FAST_POLL, lease_seconds=0.6),
    )


async def execution_of(client, instance_id: str) -> dict:
    for _ in range(200):
        page = await client.get("/api/v1/executions", params={"trigger_instance": instance_id})
        items = await page.json()
        if items:
            return await wait_execution(client, items[0]["id"])
        await asyncio.sleep(0.03)
    raise AssertionError("no execution")


async def test_webhook_to_core_local_succeeded_with_context(client):
    accepted = await (await client.post("/webhooks/deploy", json={"service": "api; id"})).json()
    execution = await execution_of(client, accepted["id"])
    assert execution["status"] == "succeeded"
    assert execution["result"]["stdout"] == "deploying api; id"
    assert execution["result"]["return_code"] == 0
    assert execution["action"]["ref"] == "core.local"
    assert execution["action"]["runner_type"] == "local-shell-cmd"
    assert execution["context"]["trigger_instance"]["id"] == accepted["id"]
    assert execution["context"]["rule"]["ref"] == "t.on_deploy"
    assert [entry["status"] for entry in execution["log"]] == [
        "requested",
        "scheduled",
        "running",
        "succeeded",
    ]
    listing = await client.get("/api/v1/executions", params={"rule": "t.on_deploy"})
    assert listing.headers["X-Total-Count"] == "1"


async def test_stackstorm_pack_python_action_runs_and_secrets_are_masked(client):
    accepted = await (
        await client.post("/webhooks/hello", json={"name": "mona", "times": 3})
    ).json()
    execution = await execution_of(client, accepted["id"])
    assert execution["status"] == "succeeded", execution["result"]
    assert execution["result"]["result"] == {"greeting": "hello mona hello mona hello mona"}
    assert "s3cr3t-token" not in str(execution)
    assert execution["parameters"]["token"] == "********"
    assert "greeting mona with ********" in execution["result"]["stdout"]


async def test_post_execution_validates_and_queues(client):
    bad = await client.post(
        "/api/v1/executions", json={"action": "ops.greet", "parameters": {"times": "x"}}
    )
    assert bad.status == 400
    assert "who" in (await bad.json())["faultstring"]
    unknown = await client.post("/api/v1/executions", json={"action": "ops.gret"})
    assert (
        unknown.status == 400
        and "did you mean 'ops.greet'" in (await unknown.json())["faultstring"]
    )
    created = await client.post(
        "/api/v1/executions",
        json={"action": "ops.greet", "parameters": {"who": "bob"}, "user": None},
    )
    assert created.status == 201
    body = await created.json()
    # The worker may already have picked it up by the time the reply is built.
    assert body["status"] in ("requested", "scheduled", "running", "succeeded")
    assert body["context"]["user"] == "api"
    done = await wait_execution(client, body["id"])
    assert done["result"]["result"] == {"greeting": "hello bob hello bob"}


async def test_timeout_kills_and_records_timeout(client):
    created = await (
        await client.post(
            "/api/v1/executions",
            json={"action": "core.local", "parameters": {"cmd": "sleep 30", "timeout": 1}},
        )
    ).json()
    done = await wait_execution(client, created["id"])
    assert done["status"] == "timeout"


async def test_invalid_parameters_at_run_time_fail_naming_the_parameter(client):
    runtime = client.app[RUNTIME]
    record = await runtime.store.create_execution(
        NewExecution(action="ops.greet", parameters={"who": 5}, context={})
    )
    done = await wait_execution(client, record.id)
    assert done["status"] == "failed"
    assert "who" in done["result"]["error"]


async def test_worker_death_retries_once_or_abandons_retry_never(client):
    store = client.app[RUNTIME].store
    runtime = client.app[RUNTIME]
    runtime.tasks["actions"].cancel()
    await asyncio.sleep(0.05)
    retried = await store.create_execution(
        NewExecution(action="core.local", parameters={"cmd": "echo again"}, context={})
    )
    never = await store.create_execution(
        NewExecution(action="ops.never", parameters={}, context={})
    )
    # Another worker claims both and "dies" mid-run: its lease simply expires.
    claimed = await store.claim_executions(10, 0.2)
    assert {c.id for c in claimed} >= {retried.id, never.id}
    for c in claimed:
        await store.start_execution(c.id, c.lease_token)
    from engine.workers.actions import run_actions_worker

    stop = asyncio.Event()
    task = asyncio.create_task(run_actions_worker(runtime, stop))
    try:
        again = await wait_execution(client, retried.id)
        abandoned = await wait_execution(client, never.id)
    finally:
        stop.set()
        await task
    assert again["status"] == "succeeded" and again["attempt"] == 2
    assert abandoned["status"] == "abandoned"
    assert "retry: never" in abandoned["result"]["error"]


async def test_re_emit_creates_a_new_instance_that_fires_again(client):
    accepted = await (await client.post("/webhooks/deploy", json={"service": "web"})).json()
    await execution_of(client, accepted["id"])
    response = await client.post(
        f"/api/v1/triggerinstances/{accepted['id']}/re_emit",
        data="null",
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 200
    body = await response.json()
    assert body["id"] != accepted["id"] and accepted["id"] in body["message"]
    execution = await execution_of(client, body["id"])
    assert execution["result"]["stdout"] == "deploying web"


async def test_actions_runners_and_packs_api_shapes(client):
    action = await (await client.get("/api/v1/actions/core.local")).json()
    assert {"ref", "pack", "name", "runner_type", "parameters"} <= set(action)
    runners = await (await client.get("/api/v1/runnertypes/?name=local-shell-cmd")).json()
    assert len(runners) == 1
    assert all("type" in p for p in runners[0]["runner_parameters"].values())
    packs = await (await client.get("/api/v1/packs")).json()
    assert {p["ref"] for p in packs} == {"core", "ops"}
    assert (await client.get("/api/v1/actions/core.nope")).status == 404


async def test_payload_template_text_is_never_rendered_again_by_the_worker(client, tmp_path):
    marker = tmp_path / "pwned"
    hostile = "{{ \"'; touch " + str(marker) + "; '\" | unquoted }}"
    accepted = await (await client.post("/webhooks/deploy", json={"service": hostile})).json()
    execution = await execution_of(client, accepted["id"])
    assert execution["status"] == "succeeded"
    assert not marker.exists()
    assert execution["result"]["stdout"] == f"deploying {hostile}"


async def test_core_echo_metadata_template_renders_and_quotes(client, tmp_path):
    marker = tmp_path / "pwned"
    created = await (
        await client.post(
            "/api/v1/executions",
            json={"action": "core.echo", "parameters": {"message": f"hi $(touch {marker})"}},
        )
    ).json()
    done = await wait_execution(client, created["id"])
    assert done["status"] == "succeeded", done["result"]
    assert done["result"]["stdout"] == f"hi $(touch {marker})"
    assert not marker.exists()


async def test_a_run_whose_heartbeats_keep_failing_stops_before_its_lease_can_be_taken(
    client, tmp_path
):
    """Store trouble outlasting the lease: the run is stopped, so attempts never overlap."""
    from engine.errors import StoreBusy

    runtime = client.app[RUNTIME]
    real_heartbeat = runtime.store.heartbeat_execution
    failing = {"on": True}

    async def heartbeat(*args, **kwargs):
        if failing["on"]:
            raise StoreBusy("injected: the database is locked")
        return await real_heartbeat(*args, **kwargs)

    runtime.store.heartbeat_execution = heartbeat
    pids = tmp_path / "pids"
    created = await (
        await client.post(
            "/api/v1/executions",
            json={
                "action": "core.local",
                "parameters": {"cmd": f"echo $$ >> {pids}; exec sleep 30", "timeout": 60},
            },
        )
    ).json()
    for _ in range(1000):
        if pids.exists() and len(pids.read_text().split()) >= 2:
            break
        await asyncio.sleep(0.03)
    failing["on"] = False
    first = int(pids.read_text().split()[0])
    # The first attempt's process was killed before the second attempt started.
    with pytest.raises(ProcessLookupError):
        os.kill(first, 0)
    running = await (await client.get(f"/api/v1/executions/{created['id']}")).json()
    assert running["attempt"] == 2
    await client.delete(f"/api/v1/executions/{created['id']}")
    done = await wait_execution(client, created["id"], statuses=("canceled",))
    assert done["status"] == "canceled"


async def test_a_python_action_gets_every_declared_parameter_none_when_unset(tmp_path):
    # StackStorm's examples.python-mock-core-remote: run(self, cmd, hosts, hosts_dict)
    # called with hosts_dict alone; StackStorm passes cmd and hosts as None.
    files = {
        "actions/remote.yaml": textwrap.dedent("""\
            name: remote
            runner_type: python-script
            entry_point: remote.py
            parameters:
              cmd: {type: string, required: false}
              hosts: {type: string}
              hosts_dict: {type: object}
            """),
        "actions/remote.py": textwrap.dedent("""\
            from st2common.runners.base_action import Action


            class Remote(Action):
                def run(self, cmd, hosts, hosts_dict):
                    return [cmd, hosts, hosts_dict]
            """),
    }
    write_pack(tmp_path / "packs", "mock", files)
    settings = settings_for(tmp_path, packs=[tmp_path / "packs"], roles=("api", "actions"))
    async with app_client(settings) as client:
        body = {"action": "mock.remote", "parameters": {"hosts_dict": {"h.example.com": 1}}}
        created = await (await client.post("/api/v1/executions", json=body)).json()
        done = await wait_execution(client, created["id"])
    assert done["status"] == "succeeded", done["result"]
    assert done["result"]["result"] == [None, None, {"h.example.com": 1}]
    assert done["parameters"] == {"hosts_dict": {"h.example.com": 1}}  # as it was asked
