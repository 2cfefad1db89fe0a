"""Inquiries (`core.ask`) end to end in one process: StackStorm's inquiry examples, run
unchanged through POST /api/v1/executions, paused on their asks and answered through
PUT /api/v1/inquiries/<id>; a real SQLite file and a real PostgreSQL (conftest.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from engine.config import AuthSettings, Settings, StoreSettings, WorkerSettings
from engine.http.context import RUNTIME
from engine.packs.inquiry import DEFAULT_SCHEMA, MAX_RESPONSE_BYTES
from engine.workers.workflows import expire_inquiries
from tests.support.app import app_client
from tests.support.inquiries import copy_ask_examples, wait_inquiries, wait_status
from tests.support.packs import write_pack, write_rules
from tests.support.postgres import truncate_all

ASKED = {
    "type": "object",
    "properties": {"approved": {"type": "boolean", "description": "Continue?", "required": True}},
}


@pytest.fixture
async def empty_store_url(store_url: str) -> str:
    """The test's store URL; on PostgreSQL (one database per session) emptied first, as
    these tests read every pending inquiry."""
    if store_url.startswith("postgresql://"):
        await truncate_all(store_url)
    return store_url


@pytest.fixture
def settings(tmp_path: Path, empty_store_url: str) -> Settings:
    store_url = empty_store_url
    packs = tmp_path / "packs"
    copy_ask_examples(packs)
    write_pack(
        packs,
        "asks",
        {
            "actions/after.yaml": """\
                name: after
                runner_type: orquesta
                entry_point: workflows/after.yaml
                """,
            # The answer's values, published and passed on to the next task.
            "actions/workflows/after.yaml": """\
                version: 1.0
                tasks:
                  ask:
                    action: core.ask
                    input:
                      schema:
                        type: object
                        properties:
                          name: {type: string, required: true}
                      users: [alice]
                      route: ops
                      ttl: 5
                    next:
                      - when: <% succeeded() %>
                        publish:
                          - who: <% result().response.name %>
                        do: greet
                      - when: <% failed() %>
                        publish:
                          - who: nobody
                        do: greet
                  greet:
                    action: core.echo message="hello <% ctx(who) %>"
                output:
                  - who: <% ctx(who) %>
                """,
            "actions/beside.yaml": """\
                name: beside
                runner_type: orquesta
                entry_point: workflows/beside.yaml
                """,
            # An ask in one branch while the other branch still has tasks to run.
            "actions/workflows/beside.yaml": """\
                version: 1.0
                tasks:
                  start:
                    action: core.noop
                    next:
                      - do: [ask, slow]
                  ask:
                    action: core.ask
                    next:
                      - when: <% succeeded() %>
                        do: done
                  slow:
                    action: core.local cmd="sleep 1"
                    next:
                      - do: after_slow
                  after_slow:
                    action: core.noop
                    next:
                      - do: done
                  done:
                    join: all
                    action: core.noop
                """,
            "actions/each.yaml": """\
                name: each
                runner_type: orquesta
                entry_point: workflows/each.yaml
                """,
            # One ask per item: the task ends once every item is answered.
            "actions/workflows/each.yaml": """\
                version: 1.0
                tasks:
                  approve:
                    with: who in <% list(alice, bob) %>
                    action: core.ask
                    input:
                      route: <% item(who) %>
                    next:
                      - when: <% succeeded() %>
                        publish:
                          - answers: <% result().select($.response.continue) %>
                output:
                  - answers: <% ctx(answers) %>
                """,
        },
    )
    # StackStorm's notify_inquiry example, routed to core.echo instead of Slack.
    rules = write_rules(
        tmp_path / "rules",
        {
            "notify_inquiry": """\
                name: notify_inquiry
                pack: asks
                trigger:
                  type: core.st2.generic.inquiry
                action:
                  ref: core.echo
                  parameters:
                    message: 'Inquiry {{trigger.id}} awaits an approval on {{ trigger.route }}'
                """,
            # An answer (or a timeout) ends the ask as any execution ends.
            "ask_ended": """\
                name: ask_ended
                pack: asks
                trigger:
                  type: core.st2.generic.actiontrigger
                criteria:
                  trigger.action_ref: {type: equals, pattern: core.ask}
                action:
                  ref: core.echo
                  parameters:
                    message: 'ask {{ trigger.execution_id }} {{ trigger.status }}'
                """,
        },
    )
    return Settings(
        store=StoreSettings(url=store_url),
        workers=WorkerSettings(poll_interval=0.5, lease_seconds=5),
        auth=AuthSettings(enabled=False),
        rules_dirs=(str(rules),),
        packs_dirs=(str(packs),),
        roles=("api", "rules", "actions", "workflows"),
        base_dir=str(tmp_path),
    )


async def start(client, action: str, **parameters) -> str:
    reply = await client.post(
        "/api/v1/executions", json={"action": action, "parameters": parameters}
    )
    assert reply.status == 201, await reply.text()
    return (await reply.json())["id"]


async def answer(client, inquiry_id: str, response, status: int = 200) -> dict:
    reply = await client.put(
        f"/api/v1/inquiries/{inquiry_id}", json={"id": inquiry_id, "response": response}
    )
    body = await reply.json()
    assert reply.status == status, body
    return body


async def tasks_of(client, execution_id: str) -> dict[str, dict]:
    """The workflow's own task runs by task name (not its subworkflows')."""
    reply = await client.get(f"/api/v1/executions/{execution_id}/children")
    found = await reply.json()
    return {child["context"]["orquesta"]["task_name"]: child for child in found}


async def test_basic_ask_pauses_the_workflow_and_an_answer_finishes_it(client) -> None:
    workflow = await start(client, "examples.orquesta-ask-basic")
    paused = await wait_status(client, workflow, ("paused",))
    assert paused["status"] == "paused"
    [inquiry] = await wait_inquiries(client, 1)
    assert inquiry["schema"] == ASKED
    assert (inquiry["roles"], inquiry["users"], inquiry["route"], inquiry["ttl"]) == (
        [],
        [],
        "",
        1440,
    )
    ask = (await tasks_of(client, workflow))["get_approval"]
    assert ask["id"] == inquiry["id"]
    assert ask["status"] == "pending"
    got = await client.get(f"/api/v1/inquiries/{inquiry['id']}")
    assert await got.json() == inquiry

    assert await answer(client, inquiry["id"], {"approved": True}) == {
        "id": inquiry["id"],
        "response": {"approved": True},
    }
    done = await wait_status(client, workflow, ())
    assert done["status"] == "succeeded", done
    tasks = await tasks_of(client, workflow)
    assert sorted(tasks) == ["finish", "get_approval", "start"]
    assert tasks["get_approval"]["status"] == "succeeded"
    # StackStorm's shape: what was asked, plus the response.
    assert tasks["get_approval"]["result"] == {
        "schema": ASKED,
        "roles": [],
        "users": [],
        "route": "",
        "ttl": 1440,
        "response": {"approved": True},
    }
    assert tasks["finish"]["result"]["stdout"] == "Automation completed."
    assert await wait_inquiries(client, 0) == []


async def test_a_response_that_does_not_fit_changes_nothing(client) -> None:
    workflow = await start(client, "examples.orquesta-ask-basic")
    [inquiry] = await wait_inquiries(client, 1)
    url = f"/api/v1/inquiries/{inquiry['id']}"
    wrong = await answer(client, inquiry["id"], {"approved": "yes"}, 400)
    assert "approved" in wrong["faultstring"] and "boolean" in wrong["faultstring"]
    missing = await answer(client, inquiry["id"], {}, 400)
    assert "'approved' is a required property" in missing["faultstring"]
    assert "JSON object" in (await answer(client, inquiry["id"], [1], 400))["faultstring"]
    too_big = {"approved": True, "x": "a" * MAX_RESPONSE_BYTES}
    huge = await answer(client, inquiry["id"], too_big, 400)
    assert "over the limit" in huge["faultstring"]
    deep = b'{"response": {"approved": true, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    nested = await client.put(url, data=deep, headers={"Content-Type": "application/json"})
    assert nested.status == 400
    assert "nest" in (await nested.json())["faultstring"]
    for body, named in (
        (b"{not json", "JSON"),
        (b'{"id": "%s"}' % inquiry["id"].encode(), "response"),
        (b'{"id": "other", "response": {"approved": true}}', "does not match"),
        (b'{"response": {"approved": true}, "status": "x"}', "'status'"),
    ):
        reply = await client.put(url, data=body, headers={"Content-Type": "application/json"})
        assert reply.status == 400
        assert named in (await reply.json())["faultstring"]
    # Nothing changed: still pending, still paused; a good answer still goes through.
    assert (await tasks_of(client, workflow))["get_approval"]["status"] == "pending"
    assert (await wait_status(client, workflow, ("paused",)))["status"] == "paused"
    await answer(client, inquiry["id"], {"approved": False})
    done = await wait_status(client, workflow, ())
    # `approved: false` is a valid answer: the ask succeeded, and so does the workflow.
    assert done["status"] == "succeeded"
    again = await answer(client, inquiry["id"], {"approved": True}, 400)
    assert again["faultstring"] == f'Inquiry "{inquiry["id"]}" has already been responded to.'


async def test_unknown_inquiries_and_executions_that_are_not_inquiries_are_404(client) -> None:
    for path in ("/api/v1/inquiries/nope", "/api/v1/inquiries/nope/"):
        reply = await client.get(path)
        assert reply.status == 404
        assert "nope" in (await reply.json())["faultstring"]
    reply = await client.put("/api/v1/inquiries/nope", json={"response": {"continue": True}})
    assert reply.status == 404
    echo = await start(client, "core.echo", message="hi")
    await wait_status(client, echo, ())
    assert (await client.get(f"/api/v1/inquiries/{echo}")).status == 404


async def test_consecutive_asks_each_pause_the_workflow(client) -> None:
    workflow = await start(client, "examples.orquesta-ask-consecutive")
    [first] = await wait_inquiries(client, 1)
    await answer(client, first["id"], {"approved": True})
    second = first
    while second["id"] == first["id"]:
        [second] = await wait_inquiries(client, 1)
    assert second["schema"]["properties"]["approved"]["description"] == "Really?"
    assert (await wait_status(client, workflow, ("paused",)))["status"] == "paused"
    await answer(client, second["id"], {"approved": True})
    assert (await wait_status(client, workflow, ()))["status"] == "succeeded"
    assert sorted(await tasks_of(client, workflow)) == [
        "finish",
        "get_approval",
        "get_confirmation",
        "start",
    ]


async def test_an_answers_values_are_published_for_the_next_tasks(client) -> None:
    workflow = await start(client, "examples.orquesta_ask_multiple_parameters")
    [inquiry] = await wait_inquiries(client, 1)
    assert inquiry["ttl"] == 60
    bad = await answer(client, inquiry["id"], {"approved": True}, 400)
    assert "department_id" in bad["faultstring"]
    await answer(
        client, inquiry["id"], {"approved": True, "department_id": 7, "extra_output": "go"}
    )
    assert (await wait_status(client, workflow, ()))["status"] == "succeeded"
    tasks = await tasks_of(client, workflow)
    assert tasks["echo_extra_message"]["result"]["stdout"] == "Extra info go."
    assert tasks["finish"]["result"]["stdout"] == (
        "Approved by department 7. Automation completed."
    )


async def test_a_refusal_takes_the_failed_path_only_when_the_ask_fails(client) -> None:
    workflow = await start(client, "examples.orquesta_ask_multiple_parameters")
    [inquiry] = await wait_inquiries(client, 1)
    await answer(client, inquiry["id"], {"approved": False, "department_id": 1})
    done = await wait_status(client, workflow, ())
    # StackStorm's example: approved = false goes to `stop`, which fails the workflow.
    assert done["status"] == "failed"
    tasks = await tasks_of(client, workflow)
    assert tasks["stop"]["result"]["stdout"] == "Automation stopped."


async def test_a_nested_ask_pauses_both_workflows_and_the_answer_resumes_both(client) -> None:
    parent = await start(client, "examples.orquesta-ask-nested")
    [inquiry] = await wait_inquiries(client, 1)
    assert (await wait_status(client, parent, ("paused",)))["status"] == "paused"
    sub = (await tasks_of(client, parent))["get_approval"]
    assert (await wait_status(client, sub["id"], ("paused",)))["status"] == "paused"
    await answer(client, inquiry["id"], {"approved": True})
    assert (await wait_status(client, parent, ()))["status"] == "succeeded"
    assert (await wait_status(client, sub["id"], ()))["status"] == "succeeded"
    tasks = await tasks_of(client, parent)
    assert tasks["finish"]["result"]["stdout"] == "Automation completed."


async def test_parallel_asks_resume_the_workflow_once_both_are_answered(client) -> None:
    workflow = await start(client, "examples.orquesta-ask-parallel")
    assert len(await wait_inquiries(client, 2)) == 2
    assert (await wait_status(client, workflow, ("paused",)))["status"] == "paused"
    tasks = await tasks_of(client, workflow)
    jack, jill = tasks["ask_jack"]["id"], tasks["ask_jill"]["id"]
    await answer(client, jack, {"approved": True})
    # The answer resumed the workflow (same transaction); with jill's ask still pending it
    # pauses again, and `finish` (join: all) waits.
    assert (await wait_status(client, jack, ("succeeded",)))["status"] == "succeeded"
    assert (await wait_status(client, workflow, ("paused",)))["status"] == "paused"
    assert "finish" not in await tasks_of(client, workflow)
    assert [inquiry["id"] for inquiry in await wait_inquiries(client, 1)] == [jill]
    await answer(client, jill, {"approved": True})
    assert (await wait_status(client, workflow, ()))["status"] == "succeeded"
    tasks = await tasks_of(client, workflow)
    assert tasks["finish"]["status"] == "succeeded"
    assert tasks["finish"]["result"]["stdout"] == "Automation completed."


async def test_a_pending_ask_holds_back_the_other_branchs_next_task(client) -> None:
    """Orquesta: a pending task makes its workflow `pausing` while others run (they
    finish, no new task starts), then `paused`; the answer resumes it."""
    workflow = await start(client, "asks.beside")
    [inquiry] = await wait_inquiries(client, 1)
    assert (await wait_status(client, workflow, ("pausing", "paused")))["status"] == "pausing"
    assert (await wait_status(client, workflow, ("paused",)))["status"] == "paused"
    tasks = await tasks_of(client, workflow)
    assert tasks["slow"]["status"] == "succeeded"
    assert "after_slow" not in tasks
    await answer(client, inquiry["id"], {"continue": True})
    assert (await wait_status(client, workflow, ()))["status"] == "succeeded"
    tasks = await tasks_of(client, workflow)
    assert [tasks[name]["status"] for name in ("after_slow", "done")] == ["succeeded"] * 2


async def test_asks_in_with_items_pause_until_every_item_is_answered(client) -> None:
    workflow = await start(client, "asks.each")
    asked = await wait_inquiries(client, 2)
    assert sorted(inquiry["route"] for inquiry in asked) == ["alice", "bob"]
    assert (await wait_status(client, workflow, ("paused",)))["status"] == "paused"
    by_route = {inquiry["route"]: inquiry["id"] for inquiry in asked}
    await answer(client, by_route["bob"], {"continue": False})
    assert (await wait_status(client, by_route["bob"], ("succeeded",)))["status"] == "succeeded"
    assert (await wait_status(client, workflow, ("paused",)))["status"] == "paused"
    await answer(client, by_route["alice"], {"continue": True})
    done = await wait_status(client, workflow, ())
    assert done["status"] == "succeeded", done["result"]
    assert done["result"]["output"] == {"answers": [True, False]}  # in item order


async def test_an_ask_with_users_is_answered_and_its_value_published(client) -> None:
    workflow = await start(client, "asks.after")
    [inquiry] = await wait_inquiries(client, 1)
    assert (inquiry["users"], inquiry["route"], inquiry["ttl"]) == (["alice"], "ops", 5)
    # Auth is off in this app: no key, so nobody to refuse (engine.http.rbac).
    await answer(client, inquiry["id"], {"name": "bob"})
    done = await wait_status(client, workflow, ())
    assert done["status"] == "succeeded"
    assert done["result"]["output"] == {"who": "bob"}


async def echoed(client, text: str, timeout: float = 20.0) -> list[dict]:
    """The succeeded core.echo runs whose output holds `text`, once there is one."""
    deadline = time.monotonic() + timeout
    while True:
        reply = await client.get("/api/v1/executions", params={"action": "core.echo"})
        found = [
            e
            for e in await reply.json()
            if e["status"] == "succeeded" and text in e["result"]["stdout"]
        ]
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def test_a_new_inquiry_fires_core_st2_generic_inquiry(client) -> None:
    workflow = await start(client, "asks.after")
    [inquiry] = await wait_inquiries(client, 1)
    [echo] = await echoed(client, f"Inquiry {inquiry['id']}")
    assert echo["result"]["stdout"] == f"Inquiry {inquiry['id']} awaits an approval on ops"
    assert echo["rule"]["ref"] == "asks.notify_inquiry"
    await answer(client, inquiry["id"], {"name": "carol"})
    assert (await wait_status(client, workflow, ()))["status"] == "succeeded"
    # Its end fires core.st2.generic.actiontrigger, as any execution's end does.
    [ended] = await echoed(client, f"ask {inquiry['id']}")
    assert ended["result"]["stdout"] == f"ask {inquiry['id']} succeeded"


async def test_an_expired_inquiry_times_out_and_the_workflow_takes_its_failed_path(
    client, store_url: str, tmp_path: Path
) -> None:
    workflow = await start(client, "asks.after")
    [inquiry] = await wait_inquiries(client, 1)
    past = datetime.now().astimezone() - timedelta(minutes=1)
    if store_url.startswith("sqlite"):
        db = sqlite3.connect(tmp_path / "hookyard.db")
        with db:
            db.execute("UPDATE inquiries SET expires_at = '2000-01-01T00:00:00+00:00'")
        db.close()
    else:
        conn = await asyncpg.connect(store_url)
        await conn.execute("UPDATE inquiries SET expires_at = $1", past)
        await conn.close()
    # What the workflows role does every INQUIRY_EXPIRY_INTERVAL seconds.
    await expire_inquiries(client.app[RUNTIME])
    done = await wait_status(client, workflow, ())
    assert done["status"] == "succeeded", done["result"]
    assert done["result"]["output"] == {"who": "nobody"}
    ask = (await tasks_of(client, workflow))["ask"]
    assert ask["status"] == "timeout"
    assert "response" not in ask["result"]
    late = await answer(client, inquiry["id"], {"name": "x"}, 400)
    assert "timed out" in late["faultstring"]
    [ended] = await echoed(client, f"ask {inquiry['id']}")
    assert ended["result"]["stdout"] == f"ask {inquiry['id']} timeout"


async def test_canceling_a_paused_workflow_cancels_its_inquiry(client) -> None:
    workflow = await start(client, "examples.orquesta-ask-basic")
    [inquiry] = await wait_inquiries(client, 1)
    await wait_status(client, workflow, ("paused",))
    reply = await client.delete(f"/api/v1/executions/{workflow}")
    assert reply.status == 200
    assert (await wait_status(client, workflow, ()))["status"] == "canceled"
    assert (await tasks_of(client, workflow))["get_approval"]["status"] == "canceled"
    assert await wait_inquiries(client, 0) == []
    refused = await answer(client, inquiry["id"], {"approved": True}, 400)
    assert "canceled" in refused["faultstring"]


async def test_core_ask_alone_uses_stackstorms_default_schema(client) -> None:
    ask = await start(client, "core.ask")
    assert (await wait_status(client, ask, ("pending",)))["status"] == "pending"
    [inquiry] = await wait_inquiries(client, 1)
    assert inquiry["schema"] == DEFAULT_SCHEMA
    await answer(client, ask, {"continue": True})
    done = await wait_status(client, ask, ())
    assert done["status"] == "succeeded"
    assert done["result"]["response"] == {"continue": True}


async def test_an_ask_whose_schema_is_no_json_schema_fails_saying_so(client) -> None:
    not_a_schema = {"type": "object", "properties": {"a": {"type": 7}}}
    ask = await start(client, "core.ask", schema=not_a_schema)
    done = await wait_status(client, ask, ())
    assert done["status"] == "failed"
    assert "not a valid JSON schema at properties/a/type" in done["result"]["error"]
    assert await wait_inquiries(client, 0) == []


async def test_an_action_chain_pauses_on_its_ask_and_an_answer_goes_on(client) -> None:
    chain = await start(client, "examples.chain-test-inquiry")
    [inquiry] = await wait_inquiries(client, 1)
    assert inquiry["route"] == "developers"
    assert (await wait_status(client, chain, ("paused",)))["status"] == "paused"
    await answer(client, inquiry["id"], {"secondfactor": "s3cret"})
    done = await wait_status(client, chain, ())
    assert done["status"] == "succeeded", done["result"]
    task1, task2 = done["result"]["tasks"]
    assert task1["result"]["response"] == {"secondfactor": "s3cret"}
    # StackStorm's template reads `task1.result.response` after the resume.
    assert task2["result"]["stdout"] == "We can now authenticate to foo service with s3cret"


async def test_a_nested_chain_pauses_its_parent_chain_too(client) -> None:
    parent = await start(client, "examples.chain-test-inquiry-parent")
    [inquiry] = await wait_inquiries(client, 1)
    assert (await wait_status(client, parent, ("paused",)))["status"] == "paused"
    children = await (await client.get(f"/api/v1/executions/{parent}/children")).json()
    assert [child["status"] for child in children] == ["paused"]
    await answer(client, inquiry["id"], {"secondfactor": "s3cret"})
    done = await wait_status(client, parent, ())
    assert done["status"] == "succeeded", done["result"]
    assert [task["name"] for task in done["result"]["tasks"]] == ["task1", "task2"]
    assert done["result"]["tasks"][1]["result"]["stdout"] == "parent task2"


async def test_the_server_keeps_serving_after_abuse(settings: Settings) -> None:
    async with app_client(settings) as client:
        for _ in range(3):
            assert (await client.put("/api/v1/inquiries/x", data=b"\xff")).status in (400, 404)
        assert (await client.get("/api/v1/inquiries")).status == 200
