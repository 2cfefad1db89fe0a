"""The event stream (/api/v1/stream, /stream/v1/stream) and execution output, in process on
a real SQLite file with real shell and Python actions."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from engine.config import Settings, StreamSettings
from engine.http.context import RUNTIME
from engine.http.stream_api import STREAM_HUB
from engine.model.apikeys import new_api_key
from engine.model.roles import OBSERVER, WEBHOOK, Grants
from tests.support.app import settings_for
from tests.support.sse import collect_until, parse_block, raw_request, read_all
from tests.support.waiting import wait_execution

# Prints a line, waits, prints another: the first must reach a client while it runs.
SLOW_ECHO = "echo first-line; sleep 1.5; echo second-line >&2; sleep 0.2; echo third-line"


def write_python_pack(root: Path) -> Path:
    pack = root / "talk"
    (pack / "actions").mkdir(parents=True)
    (pack / "pack.yaml").write_text(
        "ref: talk\nname: talk\ndescription: t\nversion: 1.0.0\nauthor: t\n"
    )
    (pack / "actions" / "chatty.yaml").write_text(
        textwrap.dedent("""\
        name: chatty
        runner_type: python-script
        entry_point: chatty.py
        parameters:
          token: {type: string, secret: true}
        """)
    )
    (pack / "actions" / "chatty.py").write_text(
        textwrap.dedent("""\
        import time
        from st2common.runners.base_action import Action


        class Chatty(Action):
            def run(self, token=None):
                print("python says hello with", token)
                time.sleep(1.5)
                print("python says bye")
                return {"ok": True}
        """)
    )
    return root


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(
        tmp_path,
        roles=("api", "rules", "actions"),
        packs=[write_python_pack(tmp_path / "packs")],
        stream=StreamSettings(poll_interval=0.1, heartbeat=1.0),
    )


async def start(client, body: dict) -> str:
    response = await client.post("/api/v1/executions", json=body)
    assert response.status == 201, await response.text()
    return (await response.json())["id"]


def finished(execution_id: str):
    def done(events) -> bool:
        return any(
            e.name == "st2.execution__update"
            and e.data["id"] == execution_id
            and e.data["status"] == "succeeded"
            for e in events
        )

    return done


async def test_shell_output_streams_while_the_action_runs(client):
    events = "st2.execution__update,st2.execution.output__create"
    async with client.get("/api/v1/stream", params={"events": events}) as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        execution_id = await start(
            client, {"action": "core.local", "parameters": {"cmd": SLOW_ECHO}}
        )
        seen = await collect_until(stream, finished(execution_id))
    names = [e.name for e in seen]
    assert set(names) <= {"st2.execution__update", "st2.execution.output__create"}
    outputs = [e.data for e in seen if e.name == "st2.execution.output__create"]
    assert "".join(o["data"] for o in outputs if o["output_type"] == "stdout") == (
        "first-line\nthird-line\n"
    )
    assert [o["data"] for o in outputs if o["output_type"] == "stderr"] == ["second-line\n"]
    assert {o["execution_id"] for o in outputs} == {execution_id}
    assert {o["action_ref"] for o in outputs} == {"core.local"}
    # Live: the first line came between "running" and the end, before the stderr line.
    first = next(i for i, e in enumerate(seen) if "first-line" in str(e.data.get("data")))
    running = next(i for i, e in enumerate(seen) if e.data.get("status") == "running")
    end = next(i for i, e in enumerate(seen) if e.data.get("status") == "succeeded")
    assert running < first < end
    # The final update carries the result; a non-final one none.
    assert seen[end].data["result"]["stdout"] == "first-line\nthird-line"
    assert seen[running].data["result"] is None
    assert seen[end].data["action"]["ref"] == "core.local"
    # Every entry's last event carries an id; ids grow.
    ids = [int(e.id) for e in seen]
    assert ids == sorted(ids) and len(ids) == len(set(ids))

    # The output is kept with the execution: text, and st2stream's event form.
    text = await client.get(f"/api/v1/executions/{execution_id}/output")
    assert await text.text() == "first-line\nsecond-line\nthird-line\n"
    only_err = await client.get(
        f"/api/v1/executions/{execution_id}/output", params={"output_type": "stderr"}
    )
    assert await only_err.text() == "second-line\n"
    async with client.get(f"/stream/v1/executions/{execution_id}/output") as replay:
        body = (await replay.read()).decode()
    blocks = [parse_block(b) for b in body.split("\n\n") if b.strip()]
    assert blocks[-1].name == "EOF"
    assert "".join(b.data["data"] for b in blocks[:-1]) == "first-line\nsecond-line\nthird-line\n"


async def test_python_action_output_streams_live_with_secrets_masked(client):
    events = "st2.execution__update,st2.execution.output__create"
    async with client.get("/stream/v1/stream", params={"events": events}) as stream:
        execution_id = await start(
            client, {"action": "talk.chatty", "parameters": {"token": "s3cr3t-value"}}
        )
        seen = await collect_until(stream, finished(execution_id))
    outputs = [e for e in seen if e.name == "st2.execution.output__create"]
    text = "".join(e.data["data"] for e in outputs)
    assert "python says hello with ********" in text and "python says bye" in text
    assert "s3cr3t-value" not in text
    hello = next(i for i, e in enumerate(seen) if "hello" in str(e.data.get("data")))
    end = next(i for i, e in enumerate(seen) if e.data.get("status") == "succeeded")
    bye = next(i for i, e in enumerate(seen) if "bye" in str(e.data.get("data")))
    assert hello < bye < end


async def test_default_events_are_st2s_and_filters_narrow_them(client):
    async with (
        client.get("/api/v1/stream") as everything,
        client.get(
            "/api/v1/stream", params={"events": "st2.liveaction__*", "action_refs": "core.noop"}
        ) as noop_only,
    ):
        local_id = await start(client, {"action": "core.local", "parameters": {"cmd": "true"}})
        noop_id = await start(client, {"action": "core.noop"})
        seen = await collect_until(
            everything, lambda es: finished(local_id)(es) and finished(noop_id)(es)
        )
        narrowed = await collect_until(
            noop_only, lambda es: any(e.data.get("status") == "succeeded" for e in es)
        )
    # st2's default list: execution and liveaction changes, no output.
    assert {e.name for e in seen} == {
        "st2.execution__create",
        "st2.execution__update",
        "st2.liveaction__create",
        "st2.liveaction__update",
    }
    assert {e.name for e in narrowed} <= {"st2.liveaction__create", "st2.liveaction__update"}
    assert {e.data["action"] for e in narrowed} == {"core.noop"}
    assert all(e.data["id"] == noop_id for e in narrowed)


async def test_trigger_instances_and_end_event_close_the_stream(client):
    async with client.get(
        "/api/v1/stream", params={"events": "st2.trigger_instance__create"}
    ) as stream:
        posted = await client.post("/api/v1/webhooks/st2", json={
            "trigger": "core.st2.webhook", "payload": {"hello": "stream"}})  # fmt: skip
        assert posted.status == 202, await posted.text()
        seen = await collect_until(stream, lambda es: bool(es))
    assert seen[0].data["trigger"] == "core.st2.webhook"
    assert seen[0].data["payload"] == {"hello": "stream"}
    assert seen[0].data["status"] == "pending"

    execution_id = await start(client, {"action": "core.local", "parameters": {"cmd": "true"}})
    params = {
        "events": "st2.execution__update",
        "end_event": "st2.execution__update",
        "end_execution_id": execution_id,
    }
    async with client.get("/api/v1/stream", params=params) as ending:
        # The stream ends by itself after the execution's final update.
        body = await asyncio.wait_for(ending.read(), 20)
    blocks = [parse_block(b) for b in body.decode().split("\n\n")]
    last = [b for b in blocks if b is not None][-1]
    assert last.data["id"] == execution_id and last.data["status"] == "succeeded"


async def test_resume_with_last_event_id(client):
    async with client.get("/api/v1/stream") as first:
        one = await start(client, {"action": "core.noop"})
        seen = await collect_until(first, finished(one))
    resume_from = max(int(e.id) for e in seen if e.id is not None)
    # Two more executions while no client was connected.
    two = await start(client, {"action": "core.noop"})
    await wait_execution(client, two)
    three = await start(client, {"action": "core.noop"})
    await wait_execution(client, three)
    async with client.get("/api/v1/stream", headers={"Last-Event-ID": str(resume_from)}) as again:
        resumed = await collect_until(again, finished(three))
    ids = {e.data["id"] for e in resumed}
    assert one not in ids and {two, three} <= ids
    assert min(int(e.id) for e in resumed if e.id is not None) > resume_from


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"events": "st2.nope__create"}, "matches no event"),
        ({"events": "st2.execution__update\nevil"}, "is not an event name"),
        ({"events": ",".join(["st2.execution__update"] * 51)}, "at most 50"),
        ({"end_event": "st2.execution__update"}, "go together"),
        ({"end_event": "st2.x", "end_execution_id": "1"}, "end_event must be"),
    ],
)
async def test_bad_filters_are_400_naming_the_problem(client, query, message):
    response = await client.get("/api/v1/stream", params=query)
    assert response.status == 400
    assert message in (await response.json())["faultstring"]


async def test_bad_last_event_id_and_output_type_are_400(client):
    response = await client.get("/api/v1/stream", headers={"Last-Event-ID": "yesterday"})
    assert response.status == 400
    assert "Last-Event-ID" in (await response.json())["faultstring"]
    execution_id = await start(client, {"action": "core.noop"})
    response = await client.get(
        f"/api/v1/executions/{execution_id}/output", params={"output_type": "both"}
    )
    assert response.status == 400
    assert "output_type" in (await response.json())["faultstring"]
    missing = await client.get("/api/v1/executions/nope/output")
    assert missing.status == 404


async def test_connection_cap_answers_503_and_frees_the_slot(tmp_path):
    from tests.support.app import app_client

    capped = settings_for(tmp_path, stream=StreamSettings(max_clients=2, heartbeat=0.5))
    async with app_client(capped) as client:
        async with client.get("/api/v1/stream") as a, client.get("/api/v1/stream") as b:
            assert (a.status, b.status) == (200, 200)
            refused = await client.get("/api/v1/stream")
            assert refused.status == 503
            assert "stream.max_clients" in (await refused.json())["faultstring"]
        # The two left: a slot is free again (the server notices at its next write).
        hub = client.server.app[STREAM_HUB]
        for _ in range(100):
            if hub.clients == 0:
                break
            await asyncio.sleep(0.05)
        async with client.get("/api/v1/stream") as c:
            assert c.status == 200


async def test_slow_client_is_dropped_with_a_final_event(tmp_path):
    from tests.support.app import app_client

    small = settings_for(
        tmp_path,
        stream=StreamSettings(client_queue=20, poll_interval=0.05, write_timeout=30.0),
    )
    async with app_client(small) as client:
        hub = client.server.app[STREAM_HUB]
        sock = raw_request(
            "127.0.0.1", client.port, "/api/v1/stream?events=st2.trigger_instance__create"
        )
        try:
            for _ in range(100):
                if hub.clients == 1:
                    break
                await asyncio.sleep(0.05)
            pad = "x" * 50_000
            for n in range(200):
                posted = await client.post(
                    "/api/v1/webhooks/st2",
                    json={"trigger": "core.st2.webhook", "payload": {"n": n, "pad": pad}},
                )
                assert posted.status == 202
            # Memory stays bounded whatever the client does: the ring holds at most 20.
            assert len(hub._ring) <= 20
            received = await asyncio.to_thread(read_all, sock, 10.0)
        finally:
            sock.close()
    text = received.decode(errors="replace")
    blocks = [parse_block(b) for b in text.split("\n\n")]
    dropped = [b for b in blocks if b is not None and b.name == "st2.stream__dropped"]
    assert len(dropped) == 1, text[-500:]
    assert dropped[0].data["status"] == "dropped"
    assert dropped[0].data["resume_after"] > 0
    # Fewer events than were made reached it: it was dropped, not buffered for.
    assert text.count("event: st2.trigger_instance__create") < 200


async def test_core_announcement_is_streamed_on_its_route(client):
    params = {"events": "st2.announcement__*,st2.trigger_instance__create"}
    async with client.get("/api/v1/stream", params=params) as stream:
        await start(
            client,
            {
                "action": "core.announcement",
                "parameters": {"route": "deploys", "message": {"text": "api v2 is out"}},
            },
        )
        # A route that is no plain name would break the event's line: not announced.
        await start(
            client,
            {"action": "core.announcement", "parameters": {"route": "x\nevent: forged"}},
        )
        seen = await collect_until(
            stream, lambda es: sum(e.name == "st2.trigger_instance__create" for e in es) == 2
        )
    announced = [e for e in seen if e.name.startswith("st2.announcement__")]
    assert [(e.name, e.data) for e in announced] == [
        (
            "st2.announcement__deploys",
            {"payload": {"message": {"text": "api v2 is out"}}, "trace_context": None},
        )
    ]
    assert not any(e.name == "forged" for e in seen)


async def test_output_stream_follows_a_running_execution_until_eof(client):
    execution_id = await start(
        client, {"action": "core.local", "parameters": {"cmd": "sleep 1; " + SLOW_ECHO}}
    )
    await wait_execution(client, execution_id, statuses=("running",))
    async with client.get(
        f"/stream/v1/executions/{execution_id}/output", params={"output_type": "stdout"}
    ) as live:
        body = (await asyncio.wait_for(live.read(), 20)).decode()
    blocks = [parse_block(b) for b in body.split("\n\n") if b.strip() and not b.startswith(":")]
    assert blocks[-1].name == "EOF"
    # stdout only, every line once, though part of it came before and part after connecting.
    assert "".join(b.data["data"] for b in blocks[:-1]) == "first-line\nthird-line\n"


async def test_an_observer_may_watch_a_posting_key_may_not(tmp_path):
    from tests.support.app import app_client

    async with app_client(settings_for(tmp_path, auth=True)) as client:
        store = client.server.app[RUNTIME].store
        keys = {}
        for name, role in (("watcher", OBSERVER), ("poster", WEBHOOK)):
            record, keys[name] = new_api_key(name, role=role, grants=Grants())
            await store.create_api_key(record)
        async with client.get(
            "/stream/v1/stream", params={"st2-api-key": keys["watcher"]}
        ) as watching:
            assert watching.status == 200
        for path in ("/api/v1/stream", "/stream/v1/stream"):
            refused = await client.get(path, headers={"St2-Api-Key": keys["poster"]})
            assert refused.status == 403, path
            assert "limited to posting webhooks" in (await refused.json())["faultstring"]
