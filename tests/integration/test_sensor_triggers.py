"""A sensor is told its triggers as StackStorm's sensor container tells them: add_trigger
for each trigger of its trigger types once it is set up, then add/update/remove_trigger
as rules using them come and go (through the API, or a reload). A real sensor child
reports each call by dispatching it; real app, real SQLite file."""

from __future__ import annotations

from pathlib import Path

from engine.http.context import RUNTIME
from engine.process.reload import reload_runtime
from tests.support.app import app_client, settings_for
from tests.support.packs import write_pack
from tests.support.waiting import get_json, wait_until

WATCHER = {
    "triggers/watched.yaml": (
        "name: watched\nparameters_schema:\n  type: object\n  properties:\n"
        "    path: {type: string}\n"
    ),
    "triggers/plain.yaml": "name: plain\ndescription: first\n",
    "triggers/seen.yaml": "name: seen\n",
    "sensors/watcher.yaml": (
        "class_name: Watcher\nentry_point: watcher.py\ntrigger_types: [s.watched, s.plain]\n"
    ),
    # Reports every call; the datastore call inside add_trigger must not hang it.
    "sensors/watcher.py": """\
        import time

        from st2reactor.sensor.base import Sensor

        class Watcher(Sensor):
            def setup(self):
                self.calls = 0

            def run(self):
                while True:
                    time.sleep(0.1)

            def _report(self, op, trigger):
                self.calls += 1
                self.sensor_service.dispatch("s.seen", {
                    "op": op,
                    "ref": trigger["ref"],
                    "type": trigger["type"],
                    "parameters": trigger["parameters"],
                    "description": trigger["description"],
                    "calls": self.calls,
                })

            def add_trigger(self, trigger):
                self.sensor_service.set_value("last_added", trigger["ref"])
                self._report("add", trigger)

            def update_trigger(self, trigger):
                self._report("update", trigger)

            def remove_trigger(self, trigger):
                self._report("remove", trigger)
    """,
    "sensors/broken_handler.yaml": (
        "class_name: BrokenHandler\nentry_point: broken_handler.py\ntrigger_types: [s.watched]\n"
    ),
    # A handler that raises is reported; the sensor keeps running and dispatching.
    "sensors/broken_handler.py": """\
        import time

        from st2reactor.sensor.base import Sensor

        class BrokenHandler(Sensor):
            def setup(self):
                pass

            def run(self):
                while True:
                    time.sleep(0.1)

            def add_trigger(self, trigger):
                raise RuntimeError("handler broke on " + trigger["ref"])

            def remove_trigger(self, trigger):
                self.sensor_service.dispatch("s.seen", {"op": "broken-remove"})
    """,
}

FILE_RULE = """\
name: on_a
pack: t
trigger: {type: s.watched, parameters: {path: /a}}
action: {ref: core.noop}
"""

API_RULE = {
    "name": "on_b",
    "pack": "t",
    "trigger": {"type": "s.watched", "parameters": {"path": "/b"}},
    "action": {"ref": "core.noop"},
}


async def _seen(client) -> list[dict]:
    found = await get_json(client, "/api/v1/triggerinstances", trigger="s.seen", limit=1000)
    return sorted((i["payload"] for i in found), key=lambda p: p.get("calls", 0))


async def _wait_seen(client, check, what: str) -> list[dict]:
    async def found():
        seen = await _seen(client)
        return seen if check(seen) else None

    return await wait_until(found, what, timeout=20)


def _calls(seen: list[dict], op: str) -> list[tuple]:
    return [
        (p["type"], p["parameters"].get("path"), p["description"])
        for p in seen
        if p.get("op") == op
    ]


async def test_a_sensor_is_told_its_triggers_and_their_changes(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    write_pack(packs, "s", WATCHER)
    settings = settings_for(
        tmp_path, packs=[packs], rules={"on_a": FILE_RULE}, roles=("api", "sensors")
    )
    async with app_client(settings) as client:
        # Set up: the file rule's trigger and the parameterless type's own trigger.
        seen = await _wait_seen(client, lambda s: len(_calls(s, "add")) >= 2, "first adds")
        assert sorted(_calls(seen, "add")) == [
            ("s.plain", None, "first"),
            ("s.watched", "/a", ""),
        ]
        # A rule stored through the API adds its trigger; deleting it removes it.
        reply = await client.post("/api/v1/rules", json=API_RULE)
        assert reply.status == 201, await reply.text()
        seen = await _wait_seen(client, lambda s: len(_calls(s, "add")) >= 3, "the /b add")
        assert _calls(seen, "add")[-1] == ("s.watched", "/b", "")
        assert (await client.delete("/api/v1/rules/t.on_b")).status == 204
        seen = await _wait_seen(client, lambda s: _calls(s, "remove"), "the /b remove")
        assert _calls(seen, "remove") == [("s.watched", "/b", "")]
        # A reload that changes a trigger updates it.
        (packs / "s" / "triggers" / "plain.yaml").write_text("name: plain\ndescription: second\n")
        reload_runtime(client.server.app[RUNTIME])
        seen = await _wait_seen(client, lambda s: _calls(s, "update"), "the update")
        assert _calls(seen, "update") == [("s.plain", None, "second")]
        # Each change was told once; the datastore call inside add_trigger answered.
        assert len(_calls(seen, "add")) == 3
        stored = await get_json(client, "/api/v1/keys/s.Watcher:last_added")
        assert stored["value"].startswith("s.watched.")  # the /b trigger's ref
        # The sensor whose add_trigger raises still runs, and hears the remove of /a
        # when its rule goes (file rules: a reload without the file).
        (tmp_path / "rules" / "on_a.yaml").unlink()
        reload_runtime(client.server.app[RUNTIME])
        await _wait_seen(
            client, lambda s: any(p.get("op") == "broken-remove" for p in s), "broken's remove"
        )
        await _wait_seen(client, lambda s: len(_calls(s, "remove")) == 2, "the /a remove")
        states = {s["ref"]: s for s in await get_json(client, "/api/v1/sensortypes")}
        assert states["s.BrokenHandler"]["status"] == "running"
        assert states["s.BrokenHandler"]["restarts"] == 0
