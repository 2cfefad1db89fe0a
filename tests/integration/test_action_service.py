"""``self.action_service`` of Python actions through the real app: the action runs in its
child process, asks the engine over its channel, and the engine writes the real SQLite
datastore (and stores dispatched trigger instances)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import Settings
from tests.support.app import settings_for
from tests.support.packs import pack_meta, write_pack
from tests.support.waiting import wait_execution

KVDEMO = {
    "triggers/ping.yaml": """\
        name: ping
        description: a ping from an action
        payload_schema:
          type: object
          properties:
            n: {type: integer}
          required: [n]
          additionalProperties: false
        """,
    "actions/remember.yaml": """\
        name: remember
        runner_type: python-script
        entry_point: remember.py
        parameters:
          value: {type: string, required: true}
        """,
    "actions/remember.py": """\
        from st2common.runners.base_action import Action


        class Remember(Action):
            def run(self, value):
                svc = self.action_service
                before = svc.get_value("count")
                svc.set_value("count", value)
                svc.set_value("seen", {"as": "text"})  # stored as str(value), as st2
                svc.set_value("kvdemo_shared", "global", local=False)
                svc.set_value("secret", "s3cr3t", encrypt=True)
                names = sorted(pair.name for pair in svc.list_values())
                prefixed = [pair.name for pair in svc.list_values(prefix="co")]
                return {
                    "before": before,
                    "after": svc.get_value("count"),
                    "seen": svc.get_value("seen"),
                    "global": svc.get_value("kvdemo_shared", local=False),
                    "secret": svc.get_value("secret", decrypt=True),
                    "missing": svc.get_value("never-set"),
                    "names": names,
                    "prefixed": prefixed,
                    "deleted": svc.delete_value("seen"),
                    "deleted_again": svc.delete_value("seen"),
                }
        """,
    "actions/ping.yaml": """\
        name: ping
        runner_type: python-script
        entry_point: ping.py
        parameters:
          n: {type: integer, required: true}
        """,
    "actions/ping.py": """\
        from st2common.runners.base_action import Action


        class Ping(Action):
            def run(self, n):
                instance = self.action_service.dispatch_trigger("kvdemo.ping", {"n": n})
                try:
                    self.action_service.dispatch_trigger("kvdemo.ping", {"n": "not a number"})
                except Exception as exc:
                    refused = f"{type(exc).__name__}: {exc}"
                return {"instance": instance, "refused": refused}
        """,
    "actions/abuse.yaml": """\
        name: abuse
        runner_type: python-script
        entry_point: abuse.py
        parameters:
          mode: {type: string, required: true}
        """,
    "actions/abuse.py": """\
        import json

        from st2common.runners.base_action import Action


        def raw(service, message):
            # What a hostile action can do: write its own request on the channel.
            service._requests.write(json.dumps(message) + "\\n")
            service._requests.flush()
            return json.loads(service._replies.readline())


        class Abuse(Action):
            def run(self, mode):
                svc = self.action_service
                try:
                    if mode == "huge":
                        svc.set_value("big", "x" * (2 * 1024 * 1024))
                    elif mode == "name":
                        svc.set_value(123, "v")
                    elif mode == "scope":
                        svc.set_value("k", "v", scope="user")
                    elif mode == "flood":
                        # One request line past the engine's bound: refused, then served on.
                        svc._requests.write("x" * (9 * 1024 * 1024) + "\\n")
                        svc._requests.flush()
                        refused = json.loads(svc._replies.readline())
                        svc.set_value("after_flood", "ok")
                        return {"refused": refused, "then": svc.get_value("after_flood")}
                    elif mode == "raw":
                        return {
                            "other_class": raw(svc, {"id": 1, "op": "kv", "class": "Evil",
                                "method": "set", "args": {"name": "k", "value": "v"}}),
                            "bad_class": raw(svc, {"id": 2, "op": "kv", "class": "x:y",
                                "method": "set", "args": {"name": "k", "value": "v"}}),
                            "huge": raw(svc, {"id": 3, "op": "kv", "class": "Abuse",
                                "method": "set",
                                "args": {"name": "k", "value": "y" * (1024 * 1024 + 1)}}),
                            "name": raw(svc, {"id": 4, "op": "kv", "class": "Abuse",
                                "method": "get", "args": {"name": ["a"]}}),
                            "garbage": raw(svc, {"id": 5, "op": "drop tables"}),
                            "after": svc.get_value("k", local=False),
                        }
                except Exception as exc:
                    return (False, f"{type(exc).__name__}: {exc}")
                return "no error"
        """,
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    write_pack(tmp_path / "packs", "kvdemo", KVDEMO, meta=pack_meta("kvdemo"))
    return settings_for(tmp_path, packs=[tmp_path / "packs"], roles=("api", "actions"))


async def run_action(client, action: str, parameters: dict) -> dict:
    body = {"action": action, "parameters": parameters}
    created = await client.post("/api/v1/executions", json=body)
    assert created.status == 201, await created.text()
    return await wait_execution(client, (await created.json())["id"])


async def key(client, name: str) -> dict | None:
    reply = await client.get(f"/api/v1/keys/{name}")
    return await reply.json() if reply.status == 200 else None


async def test_an_action_reads_and_writes_the_datastore_under_its_pack_and_class(client):
    first = await run_action(client, "kvdemo.remember", {"value": "1"})
    assert first["status"] == "succeeded", first["result"]
    result = first["result"]["result"]
    assert result["before"] is None and result["missing"] is None
    assert result["after"] == "1"
    assert result["seen"] == str({"as": "text"})
    assert result["global"] == "global" and result["secret"] == "s3cr3t"
    assert result["names"] == [
        "kvdemo.Remember:count", "kvdemo.Remember:secret", "kvdemo.Remember:seen"
    ]  # fmt: skip
    assert result["prefixed"] == ["kvdemo.Remember:count"]
    assert result["deleted"] is True and result["deleted_again"] is False

    # The same keys, seen from outside: StackStorm's names, the secret encrypted.
    assert (await key(client, "kvdemo.Remember:count"))["value"] == "1"
    assert (await key(client, "kvdemo_shared"))["value"] == "global"
    assert (await key(client, "kvdemo.Remember:secret"))["secret"] is True
    assert await key(client, "kvdemo.Remember:seen") is None

    second = await run_action(client, "kvdemo.remember", {"value": "2"})
    assert second["result"]["result"]["before"] == "1", "a later run sees the stored value"


async def test_an_action_dispatches_a_trigger_instance_checked_against_its_schema(client):
    done = await run_action(client, "kvdemo.ping", {"n": 7})
    assert done["status"] == "succeeded", done["result"]
    result = done["result"]["result"]
    assert result["refused"] == (
        "ActionServiceError: payload for trigger type 'kvdemo.ping' is invalid: "
        "field 'n': 'not a number' is not of type 'integer'"
    )
    stored = await (await client.get(f"/api/v1/triggerinstances/{result['instance']}")).json()
    assert stored["trigger"] == "kvdemo.ping" and stored["payload"] == {"n": 7}


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("huge", "ValueError: datastore value of 2097152 bytes is over the limit"),
        ("name", "TypeError: a datastore key name must be a string, not int"),
        ("scope", "ValueError: Scope user is unsupported."),
    ],
)
async def test_bad_calls_fail_the_action_with_a_clear_error(client, mode, expected):
    done = await run_action(client, "kvdemo.abuse", {"mode": mode})
    assert done["status"] == "failed"
    assert done["result"]["result"].startswith(expected)
    listed = await (await client.get("/api/v1/keys")).json()
    assert listed == [], "nothing was written"


async def test_an_oversized_request_is_refused_and_the_channel_serves_on(client):
    done = await run_action(client, "kvdemo.abuse", {"mode": "flood"})
    assert done["status"] == "succeeded", done["result"]
    result = done["result"]["result"]
    assert result["refused"] == {"error": "action_service request larger than 8388608 bytes"}
    assert result["then"] == "ok"
    again = await run_action(client, "kvdemo.remember", {"value": "4"})
    assert again["status"] == "succeeded", again["result"]


async def test_a_hostile_action_cannot_write_outside_its_pack(client):
    done = await run_action(client, "kvdemo.abuse", {"mode": "raw"})
    assert done["status"] == "succeeded", done["result"]
    result = done["result"]["result"]
    # Another class name still lands under the pack the engine ran the action from.
    assert result["other_class"] == {"id": 1, "result": True}
    assert (await key(client, "kvdemo.Evil:k"))["value"] == "v"
    assert "not an action class name" in result["bad_class"]["error"]
    assert "over the limit" in result["huge"]["error"]
    assert "must be a string" in result["name"]["error"]
    assert "unknown action_service request" in result["garbage"]["error"]
    assert result["after"] is None
    listed = await (await client.get("/api/v1/keys")).json()
    assert [pair["name"] for pair in listed] == ["kvdemo.Evil:k"]

    # The engine kept serving: the next action runs.
    again = await run_action(client, "kvdemo.remember", {"value": "3"})
    assert again["status"] == "succeeded", again["result"]
