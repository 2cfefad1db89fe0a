"""Action chains end to end in one process: POST /api/v1/executions, the actions and
workflows roles, a real SQLite file and a real PostgreSQL (see conftest.py). StackStorm's
own example chains (tests/support/st2_chains) end with StackStorm's results."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import sqlite3
import time
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from engine.config import (
    AuthSettings,
    OutboundSettings,
    Settings,
    StoreSettings,
    WorkerSettings,
)
from tests.support.app import app_client
from tests.support.chain_pack import write_chain_pack
from tests.support.waiting import wait_explained_tasks
from tests.support.workflow_pack import write_workflow_pack

ENDED = ("succeeded", "failed", "canceled", "timeout", "abandoned")
TASK_KEYS = {
    "id",
    "name",
    "execution_id",
    "liveaction_id",
    "workflow",
    "created_at",
    "updated_at",
    "state",
    "result",
}


@pytest.fixture
def settings(tmp_path: Path, store_url: str) -> Settings:
    """The app of the shared `client` fixture (tests/integration/conftest.py)."""
    packs = tmp_path / "packs"
    write_chain_pack(packs)
    write_workflow_pack(packs)
    return Settings(
        store=StoreSettings(url=store_url),
        workers=WorkerSettings(poll_interval=0.5, lease_seconds=5, max_chain_links=25),
        auth=AuthSettings(enabled=False),
        rules_dirs=(),
        packs_dirs=(str(packs),),
        roles=("api", "actions", "workflows"),
        base_dir=str(tmp_path),
    )


async def start(client, action: str, **parameters) -> str:
    reply = await client.post(
        "/api/v1/executions", json={"action": action, "parameters": parameters}
    )
    assert reply.status == 201, await reply.text()
    return (await reply.json())["id"]


async def wait_ended(client, execution_id: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        data = await (await client.get(f"/api/v1/executions/{execution_id}")).json()
        if data["status"] in ENDED or time.monotonic() > deadline:
            return data
        await asyncio.sleep(0.02)


async def run(client, action: str, **parameters) -> dict:
    return await wait_ended(client, await start(client, action, **parameters))


async def children_of(client, execution_id: str) -> list[dict]:
    reply = await client.get(f"/api/v1/executions/{execution_id}/children", params={"depth": 1})
    assert reply.status == 200
    return await reply.json()


def stdout(chain: dict) -> list[str]:
    return [task["result"]["stdout"] for task in chain["result"]["tasks"]]


async def test_echochain_runs_its_three_links_as_children(client) -> None:
    chain = await run(client, "chains.echochain")
    assert chain["status"] == "succeeded", chain["result"]
    assert chain["action"]["runner_type"] == "action-chain"
    assert set(chain["result"]) == {"tasks", "published"}
    assert chain["result"]["published"] == {}
    tasks = chain["result"]["tasks"]
    assert [t["name"] for t in tasks] == ["c1", "c2", "c3"]
    assert all(set(t) == TASK_KEYS and t["state"] == "succeeded" for t in tasks)
    assert stdout(chain) == ["c1", f"c2: parent exec is {chain['id']}.", "c3"]
    children = await children_of(client, chain["id"])
    assert [c["context"]["chain"]["name"] for c in children] == ["c1", "c2", "c3"]
    assert [c["id"] for c in children] == [t["execution_id"] for t in tasks]
    assert chain["children"] == [c["id"] for c in children]
    assert all(c["parent"] == chain["id"] for c in children)
    assert all(c["context"]["parent"]["execution_id"] == chain["id"] for c in children)


async def test_echochain_param_passes_inputs_and_earlier_results(client) -> None:
    chain = await run(client, "chains.echochain-param", input1="foo")
    assert chain["status"] == "succeeded", chain["result"]
    assert stdout(chain) == ["c1, input foo", "c2 c1, input foo", "c3 c2 c1, input foo"]


async def test_chain_sequential_publishes_its_greeting(client) -> None:
    chain = await run(client, "chains.chain-sequential")
    assert chain["status"] == "succeeded", chain["result"]
    greeting = "Lakshmi, All your base are belong to us!"
    assert chain["result"]["published"] == {"greeting": greeting}
    assert stdout(chain) == ["Lakshmi", "All your base are belong to us!", greeting]


async def test_publish_data_publishes_then_fails_where_no_stackstorm_api_answers(client) -> None:
    # call_api asks StackStorm's API on this host (port 9101): none here, so the link
    # fails and, with no on-failure, so does the chain — after publishing.
    chain = await run(client, "chains.publish_data")
    host = socket.gethostname().replace(" ", "")
    assert chain["status"] == "failed", chain["result"]
    published = chain["result"]["published"]
    assert published == {  # vars (api_port, webui_port, domain) are not published
        "api_url": f"http://{host}:9101",
        "webui_url": f"http://{host}:8080",
        "host": host,
        "fqdn": host,
        "paths": {
            "api": ["v1/actions", "v1/triggers"],
            "webui": "/",
            "auth_port": "9102",
            "system_info": "/system-info",
        },
    }
    tasks = chain["result"]["tasks"]
    assert [(t["name"], t["state"]) for t in tasks] == [
        ("get_host", "succeeded"),
        ("say_the_names", "succeeded"),
        ("call_api", "failed"),
    ]
    assert tasks[1]["result"]["stdout"] == (
        f"host={host}, domain=, fqdn={host}, api_url=http://{host}:9101,"
        f" webui_url=http://{host}:8080"
    )


@pytest.mark.parametrize("name", ["echochain_task_failure", "echochain_top_level_failure"])
async def test_stackstorms_failure_examples_are_refused_before_they_run(client, name) -> None:
    # Their c1 names an on-failure link "c4" they lack: StackStorm's runner refuses them
    # in pre_run, before any link runs.
    chain = await run(client, f"chains.{name}")
    assert chain["status"] == "failed"
    assert set(chain["result"]) == {"error"}
    assert f"{name}.yaml:5: " in chain["result"]["error"]
    assert (
        'unable to find link "c4" referenced in "on-failure" in link "c1"'
        in (chain["result"]["error"])
    )
    assert await children_of(client, chain["id"]) == []


async def test_a_failed_link_without_on_failure_fails_the_chain(client) -> None:
    chain = await run(client, "chains.task_failure")
    assert chain["status"] == "failed"
    tasks = chain["result"]["tasks"]
    assert [(t["name"], t["state"]) for t in tasks] == [("c1", "succeeded"), ("c2", "failed")]
    assert tasks[1]["result"]["stderr"] == "all aboard the fail boat"
    assert "error" not in chain["result"]


async def test_a_link_to_an_action_that_does_not_exist_is_a_top_level_failure(client) -> None:
    chain = await run(client, "chains.top_level_failure")
    assert chain["status"] == "failed"
    assert [t["name"] for t in chain["result"]["tasks"]] == ["c1"]
    assert chain["result"]["error"].startswith(
        'Failed to run task "c2". Action with reference "core.invalid-action" doesn\'t exist.'
    )


async def test_a_failed_link_with_on_failure_runs_it_and_the_chain_takes_its_status(
    client,
) -> None:
    chain = await run(client, "chains.handled")
    assert chain["status"] == "succeeded", chain["result"]
    tasks = chain["result"]["tasks"]
    assert [(t["name"], t["state"]) for t in tasks] == [
        ("boom", "failed"),
        ("cleanup", "succeeded"),
    ]
    assert tasks[1]["result"]["stdout"] == "cleaned after oops"
    assert chain["result"]["published"] == {"code": "2"}


async def test_vars_results_context_and_published_values(client) -> None:
    chain = await run(client, "chains.vars_and_results")
    assert chain["status"] == "succeeded", chain["result"]
    assert stdout(chain) == ["hello mona 9102", "hello mona 9102|hello mona 9102|api"]
    assert chain["result"]["published"] == {
        "said": "hello mona 9102",
        "twice": ["hello mona 9102", 2],
    }


async def test_a_chain_links_to_another_chain(client) -> None:
    chain = await run(client, "chains.nested")
    assert chain["status"] == "succeeded", chain["result"]
    inner, after = chain["result"]["tasks"]
    assert inner["result"]["tasks"][2]["result"]["stdout"] == "c3 c2 c1, input from outside"
    assert after["result"]["stdout"] == "links: 3"


async def test_a_chain_that_links_to_itself_forever_stops_at_the_limit(client) -> None:
    chain = await run(client, "chains.forever")
    assert chain["status"] == "failed"
    assert len(chain["result"]["tasks"]) == 25
    assert (
        "The chain has run 25 links, its limit (workers.max_chain_links)"
        in (chain["result"]["error"])
    )


@pytest.mark.parametrize("name", ["looping_params", "huge_params"])
async def test_a_runaway_params_template_fails_the_chain_saying_why(client, name) -> None:
    chain = await run(client, f"chains.{name}")
    assert chain["status"] == "failed"
    assert chain["result"]["tasks"] == []
    error = chain["result"]["error"]
    assert error.startswith('Failed to run task "huge". Parameter rendering failed.')
    assert 'Failed rendering value for action parameter "message"' in error
    assert (await run(client, "chains.echochain"))["status"] == "succeeded"


async def test_a_broken_chain_fails_at_run_time_saying_where(client) -> None:
    chain = await run(client, "chains.broken")
    assert chain["status"] == "failed"
    error = chain["result"]["error"]
    assert "broken.yaml:2: " in error and '"nowhere"' in error
    assert "broken.yaml:5: " in error and "given twice" in error
    assert await children_of(client, chain["id"]) == []


async def test_canceling_a_chain_cancels_its_running_link_and_runs_no_more(
    client, tmp_path: Path
) -> None:
    marker = tmp_path / "hold"
    marker.write_text("")
    chain_id = await start(client, "chains.waiting", tempfile=str(marker))
    deadline = time.monotonic() + 20
    while not await children_of(client, chain_id) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    reply = await client.delete(f"/api/v1/executions/{chain_id}")
    assert reply.status == 200, await reply.text()
    chain = await wait_ended(client, chain_id)
    assert chain["status"] == "canceled"
    [task] = chain["result"]["tasks"]
    assert task["name"] == "task1" and task["state"] == "canceled"
    [child] = await children_of(client, chain_id)
    assert child["status"] == "canceled"


async def wait_for_children(client, execution_id: str, count: int) -> list[dict]:
    deadline = time.monotonic() + 20
    while len(children := await children_of(client, execution_id)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} children of {execution_id}"
        await asyncio.sleep(0.05)
    return children


async def test_canceling_a_chain_cancels_its_orquesta_subworkflow_and_its_tasks(client) -> None:
    chain_id = await start(client, "chains.with_subworkflow")
    [subworkflow] = await wait_for_children(client, chain_id, 1)
    await wait_for_children(client, subworkflow["id"], 2)
    assert (await client.delete(f"/api/v1/executions/{chain_id}")).status == 200
    chain = await wait_ended(client, chain_id)
    assert chain["status"] == "canceled"
    assert [t["name"] for t in chain["result"]["tasks"]] == ["task1"]
    assert (await wait_ended(client, subworkflow["id"]))["status"] == "canceled"
    tasks = await children_of(client, subworkflow["id"])
    assert sorted(t["status"] for t in tasks) == ["canceled", "canceled"]


async def test_an_orquesta_workflow_runs_a_chain_as_a_task(client) -> None:
    workflow = await run(client, "chains.calls_chain")
    assert workflow["status"] == "succeeded", workflow["result"]
    assert workflow["result"]["output"] == {"said": "c3 c2 c1, input from a workflow"}
    [inner] = await children_of(client, workflow["id"])
    assert inner["context"]["orquesta"]["task_name"] == "inner"
    links = await children_of(client, inner["id"])
    assert [c["context"]["chain"]["name"] for c in links] == ["c1", "c2", "c3"]


async def test_canceling_a_workflow_cancels_the_chain_it_runs(client, tmp_path: Path) -> None:
    marker = tmp_path / "hold"
    marker.write_text("")
    workflow_id = await start(client, "chains.waits_in_a_chain", tempfile=str(marker))
    [inner] = await wait_for_children(client, workflow_id, 1)
    [link] = await wait_for_children(client, inner["id"], 1)
    assert (await client.delete(f"/api/v1/executions/{workflow_id}")).status == 200
    assert (await wait_ended(client, workflow_id))["status"] == "canceled"
    chain = await wait_ended(client, inner["id"])
    assert chain["status"] == "canceled"
    assert [t["name"] for t in chain["result"]["tasks"]] == ["task1"]
    assert (await wait_ended(client, link["id"]))["status"] == "canceled"


async def test_pausing_a_workflow_pauses_the_chain_it_runs_and_resume_finishes_both(
    client, tmp_path: Path
) -> None:
    marker = tmp_path / "hold"
    marker.write_text("")
    workflow_id = await start(client, "chains.waits_in_a_chain", tempfile=str(marker))
    [inner] = await wait_for_children(client, workflow_id, 1)
    await wait_for_children(client, inner["id"], 1)
    url = f"/api/v1/executions/{workflow_id}"
    assert (await client.put(url, json={"status": "pausing"})).status == 200
    marker.unlink()  # the chain's task1 ends now; its task2 is held back
    deadline = time.monotonic() + 20
    for execution_id in (inner["id"], workflow_id):
        while (await (await client.get(f"/api/v1/executions/{execution_id}")).json())[
            "status"
        ] != "paused":
            assert time.monotonic() < deadline, f"{execution_id} never paused"
            await asyncio.sleep(0.05)
    assert len(await children_of(client, inner["id"])) == 1
    assert (await client.put(url, json={"status": "resuming"})).status == 200
    workflow = await wait_ended(client, workflow_id)
    assert workflow["status"] == "succeeded", workflow["result"]
    chain = await wait_ended(client, inner["id"])
    assert chain["status"] == "succeeded", chain["result"]
    assert [t["name"] for t in chain["result"]["tasks"]] == ["task1", "task2"]
    assert chain["result"]["tasks"][1]["result"]["stdout"] == "done"


HOSTILE_RULE = """\
name: on_hostile
pack: chains
trigger: {type: core.st2.webhook, parameters: {url: hostile}}
action:
  ref: chains.hostile_result
  parameters:
    marker: "{{ trigger.body.marker }}"
"""


async def test_a_triggers_chain_keeps_a_links_result_data_in_the_next_shell_command(
    tmp_path: Path, store_url: str
) -> None:
    marker = tmp_path / "owned"
    async with app_client(rule_settings(tmp_path, store_url, HOSTILE_RULE)) as client:
        accepted = await client.post("/webhooks/hostile", json={"marker": str(marker)})
        execution, _ = await wait_explained_tasks(client, (await accepted.json())["id"], 2)
        chain = await wait_ended(client, execution["id"])
    assert chain["status"] == "succeeded", chain["result"]
    said = chain["result"]["tasks"][0]["result"]["stdout"]
    assert said == f"x'; echo owned > {marker}; echo '"
    assert chain["result"]["tasks"][1]["result"]["stdout"] == f"got {said}"
    assert not marker.exists()


async def test_a_chain_a_person_runs_writes_its_commands_as_stackstorm_does(
    client, tmp_path: Path
) -> None:
    # The person's own chain (POST /api/v1/executions): its templates write whole shell
    # commands, as in StackStorm (engine.workers.workflows.inputs_trusted) — the first
    # link's quotes are read by the shell (here they quote the rest, so nothing runs).
    marker = tmp_path / "owned"
    chain = await run(client, "chains.hostile_result", marker=str(marker))
    assert chain["status"] == "succeeded", chain["result"]
    said = chain["result"]["tasks"][1]["result"]["stdout"]
    assert said.rstrip() == f"got x; echo owned > {marker}; echo"
    assert not marker.exists()


async def test_stackstorms_cancel_example_cancels_the_running_link(client, tmp_path: Path) -> None:
    marker = tmp_path / "hold"
    marker.write_text("")
    chain_id = await start(client, "chains.chain-test-cancel", tempfile=str(marker), message="m")
    await wait_for_children(client, chain_id, 1)
    assert (await client.delete(f"/api/v1/executions/{chain_id}")).status == 200
    chain = await wait_ended(client, chain_id)
    assert chain["status"] == "canceled"
    assert [(t["name"], t["state"]) for t in chain["result"]["tasks"]] == [("task1", "canceled")]


async def test_pause_lets_the_running_link_end_and_resume_runs_the_next(
    client, tmp_path: Path
) -> None:
    marker = tmp_path / "hold"
    marker.write_text("")
    chain_id = await start(
        client, "chains.chain-test-pause-resume", tempfile=str(marker), message="hello"
    )
    await wait_for_children(client, chain_id, 1)
    url = f"/api/v1/executions/{chain_id}"
    paused = await client.put(url, json={"status": "pausing"})
    assert paused.status == 200, await paused.text()
    assert (await paused.json())["status"] == "pausing"
    marker.unlink()  # task1 ends now
    deadline = time.monotonic() + 20
    while (await (await client.get(url)).json())["status"] != "paused":
        assert time.monotonic() < deadline, "never paused"
        await asyncio.sleep(0.05)
    await asyncio.sleep(1)  # a step that wrongly requested task2 would have by now
    [task1] = await children_of(client, chain_id)
    assert task1["status"] == "succeeded"
    resumed = await client.put(url, json={"status": "resuming"})
    assert resumed.status == 200, await resumed.text()
    chain = await wait_ended(client, chain_id)
    assert chain["status"] == "succeeded", chain["result"]
    assert [t["name"] for t in chain["result"]["tasks"]] == ["task1", "task2"]
    assert chain["result"]["tasks"][1]["result"]["stdout"] == "hello"
    statuses = [entry["status"] for entry in chain["log"]]
    assert statuses[-5:] == ["pausing", "paused", "resuming", "running", "succeeded"]


async def test_a_paused_chain_can_be_canceled_and_runs_no_more(client, tmp_path: Path) -> None:
    marker = tmp_path / "hold"
    marker.write_text("")
    chain_id = await start(
        client, "chains.chain-test-pause-resume", tempfile=str(marker), message="m"
    )
    await wait_for_children(client, chain_id, 1)
    url = f"/api/v1/executions/{chain_id}"
    assert (await client.put(url, json={"status": "pausing"})).status == 200
    marker.unlink()
    deadline = time.monotonic() + 20
    while (await (await client.get(url)).json())["status"] != "paused":
        assert time.monotonic() < deadline, "never paused"
        await asyncio.sleep(0.05)
    assert (await client.delete(url)).status == 200
    chain = await wait_ended(client, chain_id)
    assert chain["status"] == "canceled"
    assert [t["name"] for t in chain["result"]["tasks"]] == ["task1"]
    assert len(await children_of(client, chain_id)) == 1


async def test_pause_and_resume_reach_a_sub_chain(client, tmp_path: Path) -> None:
    marker = tmp_path / "hold"
    marker.write_text("")
    chain_id = await start(client, "chains.with_subchain", tempfile=str(marker), message="hi")
    [inner] = await wait_for_children(client, chain_id, 1)
    await wait_for_children(client, inner["id"], 1)
    url = f"/api/v1/executions/{chain_id}"
    assert (await client.put(url, json={"status": "pausing"})).status == 200
    marker.unlink()
    inner_url = f"/api/v1/executions/{inner['id']}"
    deadline = time.monotonic() + 20
    while (await (await client.get(inner_url)).json())["status"] != "paused":
        assert time.monotonic() < deadline, "the sub-chain never paused"
        await asyncio.sleep(0.05)
    assert len(await children_of(client, inner["id"])) == 1  # its task2 held back
    # As StackStorm: the outer chain is paused once its running link, the sub-chain, is.
    while (await (await client.get(url)).json())["status"] != "paused":
        assert time.monotonic() < deadline, "the outer chain never paused"
        await asyncio.sleep(0.05)
    assert (await client.put(url, json={"status": "resuming"})).status == 200
    chain = await wait_ended(client, chain_id)
    assert chain["status"] == "succeeded", chain["result"]
    assert [t["name"] for t in chain["result"]["tasks"]] == ["task1", "task2"]
    assert chain["result"]["tasks"][1]["result"]["stdout"] == "hi again"


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("time_jinja_filter", ["3h25m45s"]),
        ("version_jinja_filter", ["1.7.0", "2.0.0", "1", "1.7", "True"]),
    ],
)
async def test_stackstorms_jinja_filter_chains_say_what_their_comments_promise(
    client, name: str, said: list[str]
) -> None:
    chain = await run(client, f"chains.{name}")
    assert chain["status"] == "succeeded", chain["result"]
    assert [str(text) for text in stdout(chain)] == said


async def test_stackstorms_regex_filter_chain_fails_where_its_shell_reads_redirections(
    client,
) -> None:
    # A chain a person runs writes its commands as StackStorm does: `echo Your address is
    # <redacted>. ...` reads `<redacted` as a redirection, so replace_string fails, and so
    # does the chain (no on-failure), as it would in StackStorm.
    chain = await run(client, "chains.regex_jinja_filter")
    assert chain["status"] == "failed", chain["result"]
    tasks = chain["result"]["tasks"]
    assert [(t["name"], t["state"]) for t in tasks] == [
        ("is_match", "succeeded"),
        ("replace_string", "failed"),
    ]
    assert tasks[0]["result"]["stdout"] == "False"
    assert "redacted" in tasks[1]["result"]["stderr"]


async def stored_state(store_url: str, execution_id: str) -> str:
    if store_url.startswith("sqlite:///"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            [(state,)] = conn.execute(
                "SELECT state FROM workflow_runs WHERE execution_id = ?", (execution_id,)
            ).fetchall()
            return state
    conn = await asyncpg.connect(store_url)
    try:
        return await conn.fetchval(
            "SELECT state::text FROM workflow_runs WHERE execution_id = $1", execution_id
        )
    finally:
        await conn.close()


async def test_a_chain_with_a_secret_parameter_keeps_its_state_sealed(
    client, store_url: str
) -> None:
    chain = await run(client, "chains.secret_param", password="hunter2")
    assert chain["status"] == "succeeded", chain["result"]
    assert chain["parameters"]["password"] == "********"
    assert chain["result"]["tasks"][1]["result"]["stdout"] == "7 characters"
    state = await stored_state(store_url, chain["id"])
    assert "hunter2" not in state and "$hookyard_secret" in state


async def test_re_run_runs_the_chain_again_with_new_parameters(client) -> None:
    first = await run(client, "chains.echochain-param", input1="one")
    reply = await client.post(
        f"/api/v1/executions/{first['id']}/re_run", json={"parameters": {"input1": "two"}}
    )
    assert reply.status in (200, 201), await reply.text()
    again = await wait_ended(client, (await reply.json())["id"])
    assert again["status"] == "succeeded", again["result"]
    assert stdout(again) == ["c1, input two", "c2 c1, input two", "c3 c2 c1, input two"]


CHAIN_RULE = """\
name: on_chain
pack: chains
trigger: {type: core.st2.webhook, parameters: {url: chain}}
action:
  ref: chains.echochain-param
  parameters:
    input1: "{{ trigger.body.word }}"
"""


def rule_settings(tmp_path: Path, store_url: str, rule: str) -> Settings:
    packs, rules = tmp_path / "packs", tmp_path / "rules"
    write_chain_pack(packs)
    rules.mkdir()
    (rules / "chain.yaml").write_text(rule)
    return Settings(
        store=StoreSettings(url=store_url),
        workers=WorkerSettings(poll_interval=0.5, lease_seconds=5),
        auth=AuthSettings(enabled=False),
        rules_dirs=(str(rules),),
        packs_dirs=(str(packs),),
        roles=("api", "rules", "actions", "workflows"),
        base_dir=str(tmp_path),
    )


async def test_a_rule_starts_a_chain_and_explain_names_its_links(
    tmp_path: Path, store_url: str
) -> None:
    async with app_client(rule_settings(tmp_path, store_url, CHAIN_RULE)) as client:
        accepted = await (await client.post("/webhooks/chain", json={"word": "a; b"})).json()
        execution, tasks = await wait_explained_tasks(client, accepted["id"], 3)
        assert [t["task"] for t in tasks] == ["c1", "c2", "c3"]
        chain = await wait_ended(client, execution["id"])
        assert stdout(chain)[2] == "c3 c2 c1, input a; b"


async def listening_on(port: int, routes: web.RouteTableDef) -> web.AppRunner | None:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "0.0.0.0", port).start()
    except OSError:
        await runner.cleanup()
        return None
    return runner


async def test_publish_data_succeeds_where_stackstorms_api_and_web_ui_answer(
    settings: Settings,
) -> None:
    # publish_data's ports are fixed in the chain (9101, StackStorm's API; 8080, its web
    # UI): real servers stand in for them here, when no one else holds the ports.
    asked: list[str] = []
    routes = web.RouteTableDef()

    @routes.get("/{path:.*}")
    async def answer(request: web.Request) -> web.Response:
        asked.append(f"{request.url.port} {request.path}")
        return web.json_response([{"ref": "core.local"}])

    runners = [await listening_on(port, routes) for port in (9101, 8080)]
    try:
        if None in runners:
            pytest.skip("port 9101 or 8080 is taken on this machine")
        # This host is private (loopback here): core.http may reach it only when allowed.
        here = socket.gethostbyname(socket.gethostname())
        local = OutboundSettings(allow_private=("127.0.0.0/8", f"{here}/32"))
        async with app_client(dataclasses.replace(settings, outbound=local)) as client:
            chain = await run(client, "chains.publish_data")
    finally:
        for runner in runners:
            if runner is not None:
                await runner.cleanup()
    assert chain["status"] == "succeeded", chain["result"]
    tasks = chain["result"]["tasks"]
    assert [(t["name"], t["state"]) for t in tasks] == [
        ("get_host", "succeeded"),
        ("say_the_names", "succeeded"),
        ("call_api", "succeeded"),
        ("call_webui", "succeeded"),
    ]
    assert asked == ["9101 /v1/actions", "8080 //"]
    assert tasks[2]["result"]["status_code"] == 200
    assert tasks[2]["result"]["body"] == [{"ref": "core.local"}]
    assert set(chain["result"]["published"]) == {"api_url", "webui_url", "host", "fqdn", "paths"}
