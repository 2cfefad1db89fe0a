"""Sensors in real child processes, on a real SQLite file (and PostgreSQL for the lease):
StackStorm's FibonacciSensor runs unchanged; a crashing sensor is restarted with its
traceback reported and what it dispatched kept; a broken one is reported while the others
run; floods, huge payloads and a sensor hanging in setup stay bounded and serve serves."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.config import StoreSettings
from engine.http.context import RUNTIME
from tests.support.app import REPO_ROOT, app_client, settings_for
from tests.support.packs import write_pack
from tests.support.postgres import truncate_all
from tests.support.waiting import get_json, wait_execution, wait_until

ST2_EXAMPLES = REPO_ROOT / "tests" / "support" / "st2_examples"
TICK = """\
name: tick
payload_schema:
  type: object
  properties:
    n: {type: integer}
"""


def sensor_yaml(class_name: str, entry: str, interval: float = 0.1) -> str:
    return (
        f"class_name: {class_name}\nentry_point: {entry}\npoll_interval: {interval}\n"
        "trigger_types: [s.tick]\n"
    )


SENSORS = {
    "triggers/tick.yaml": TICK,
    # Dispatches 1, 2, 3, then crashes on its fourth poll, every run.
    "sensors/crashy.yaml": sensor_yaml("Crashy", "crashy.py"),
    "sensors/crashy.py": """\
        from st2reactor.sensor.base import PollingSensor

        class Crashy(PollingSensor):
            def setup(self):
                self.n = 0

            def poll(self):
                self.n += 1
                if self.n > 3:
                    raise ZeroDivisionError("crashy ran out of ticks")
                self.sensor_service.dispatch("s.tick", {"n": self.n})
    """,
    "sensors/broken.yaml": sensor_yaml("Broken", "broken.py"),
    "sensors/broken.py": "def this is not python(:\n",
    # Remembers its count in the datastore (local to the sensor) and dispatches it.
    "sensors/keeper.yaml": sensor_yaml("Keeper", "keeper.py", 0.2),
    "sensors/keeper.py": """\
        from st2reactor.sensor.base import PollingSensor

        class Keeper(PollingSensor):
            def setup(self):
                self.log = self.sensor_service.get_logger("keeper")

            def poll(self):
                seen = int(self.sensor_service.get_value("seen") or 0) + 1
                self.sensor_service.set_value("seen", str(seen))
                names = [kv.name for kv in self.sensor_service.list_values()]
                self.sensor_service.dispatch("s.kept", {"seen": seen, "names": names})
    """,
    "triggers/kept.yaml": "name: kept\n",
}


def sensor_settings(tmp_path: Path, packs, **fields):
    return settings_for(tmp_path, packs=packs, roles=("api", "sensors"), **fields)


async def sensor_states(client) -> dict[str, dict]:
    return {s["ref"]: s for s in await get_json(client, "/api/v1/sensortypes")}


async def count(client, trigger: str) -> int:
    response = await client.get("/api/v1/triggerinstances", params={"trigger": trigger})
    return int(response.headers["X-Total-Count"])


async def test_stackstorm_fibonacci_sensor_dispatches_and_a_rule_fires(tmp_path: Path) -> None:
    rule = "name: on_fib\npack: t\ntrigger: {type: examples.fibonacci}\naction: {ref: core.noop}\n"
    settings = settings_for(
        tmp_path,
        packs=[ST2_EXAMPLES],
        rules={"fib": rule},
        roles=("api", "rules", "actions", "sensors"),
    )
    async with app_client(settings) as client:
        instances = await wait_until(
            lambda: get_json(client, "/api/v1/triggerinstances", trigger="examples.fibonacci"),
            "a fibonacci instance",
            timeout=20,
        )
        assert instances[0]["payload"]["count"] == 2
        assert instances[0]["payload"]["fibonacci"] == 1
        await wait_execution(client, trigger_instance=instances[0]["id"])
        states = await sensor_states(client)
        assert states["examples.FibonacciSensor"]["status"] == "running"


async def test_crash_restart_broken_sensor_and_datastore(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    write_pack(packs, "s", SENSORS)
    async with app_client(sensor_settings(tmp_path, [packs])) as client:

        async def restarted():
            state = (await sensor_states(client))["s.Crashy"]
            return state if state["restarts"] >= 1 and state["last_error"] else None

        crashy = await wait_until(restarted, "crashy restarted", timeout=20)
        assert "ZeroDivisionError: crashy ran out of ticks" in crashy["last_error"]
        assert "Traceback" in crashy["last_error"]
        # Its dispatches before each crash were stored: 3 per run, none lost.
        await wait_until(lambda: _at_least(client, "s.tick", 6), "two runs' ticks", timeout=20)

        states = await sensor_states(client)
        broken = states["s.Broken"]
        assert broken["status"] in ("crashed", "backoff")
        assert "SyntaxError" in broken["last_error"]

        kept = await wait_until(
            lambda: _kept_with(client, 2), "the keeper's second count", timeout=20
        )
        assert "s.Keeper:seen" in kept["payload"]["names"]
        pair = await get_json(client, "/api/v1/keys/s.Keeper:seen")
        assert int(pair["value"]) >= 2


async def _at_least(client, trigger: str, wanted: int) -> bool:
    return await count(client, trigger) >= wanted


async def _kept_with(client, seen: int):
    found = await get_json(client, "/api/v1/triggerinstances", trigger="s.kept")
    return next((i for i in found if i["payload"]["seen"] == seen), None)


ABUSE = {
    "triggers/tick.yaml": TICK,
    "sensors/flood.yaml": sensor_yaml("Flood", "flood.py"),
    "sensors/flood.py": """\
        from st2reactor.sensor.base import Sensor

        class Flood(Sensor):
            def setup(self):
                pass

            def run(self):
                n = 0
                while True:
                    n += 1
                    self.sensor_service.dispatch("s.tick", {"n": n})
    """,
    "sensors/huge.yaml": sensor_yaml("Huge", "huge.py"),
    "sensors/huge.py": """\
        from st2reactor.sensor.base import PollingSensor

        class Huge(PollingSensor):
            def setup(self):
                pass

            def poll(self):
                self.sensor_service.dispatch("s.tick", {"blob": "x" * 5_000_000})
    """,
    "sensors/hang.yaml": sensor_yaml("Hang", "hang.py"),
    "sensors/hang.py": """\
        import time
        from st2reactor.sensor.base import PollingSensor

        class Hang(PollingSensor):
            def setup(self):
                time.sleep(3600)

            def poll(self):
                pass
    """,
}


async def test_flood_huge_payload_and_hang_stay_bounded(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    write_pack(packs, "s", ABUSE)
    settings = sensor_settings(tmp_path, [packs]).replace(
        **{"ingest.max_backlog": 200, "ingest.max_body": 100_000}
    )
    started = time.monotonic()
    async with app_client(settings) as client:
        await wait_until(lambda: _at_least(client, "s.tick", 200), "the flood", timeout=30)

        async def huge_killed():
            state = (await sensor_states(client))["s.Huge"]
            return state if state["restarts"] >= 1 else None

        huge = await wait_until(huge_killed, "the huge sensor stopped", timeout=20)
        assert "size limit" in huge["last_error"]
        # The flood waits while the backlog (no rules role here) is at ingest.max_backlog.
        await asyncio.sleep(1)
        assert await count(client, "s.tick") <= 200 + 1
        states = await sensor_states(client)
        assert states["s.Hang"]["status"] == "starting"
        assert states["s.Hang"]["pid"]
        # Serving goes on meanwhile.
        before = time.monotonic()
        health = await client.get("/health")
        assert health.status == 200
        assert time.monotonic() - before < 1.0
        hang_pid = states["s.Hang"]["pid"]
    # Stopping the app killed the hanging child (and every sensor) within the grace.
    assert time.monotonic() - started < 60
    assert not Path(f"/proc/{hang_pid}").exists() or _is_zombie(hang_pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


ONE_TICKER = {
    "triggers/tick.yaml": TICK,
    "sensors/ticker.yaml": sensor_yaml("Ticker", "ticker.py", 0.2),
    "sensors/ticker.py": """\
        from st2reactor.sensor.base import PollingSensor

        class Ticker(PollingSensor):
            def setup(self):
                self.n = 0

            def poll(self):
                self.n += 1
                self.sensor_service.dispatch("s.tick", {"n": self.n})
    """,
}


async def test_two_processes_on_postgres_run_each_sensor_once(tmp_path: Path, pg_url: str):
    await truncate_all(pg_url)
    packs = tmp_path / "packs"
    write_pack(packs, "s", ONE_TICKER)
    store = StoreSettings(url=pg_url)
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    async with (
        app_client(sensor_settings(first_dir, [packs], store=store)) as first,
        app_client(sensor_settings(second_dir, [packs], store=store)) as second,
    ):

        async def settled():
            a = (await sensor_states(first))["s.Ticker"]["status"]
            b = (await sensor_states(second))["s.Ticker"]["status"]
            return sorted([a, b]) if {a, b} == {"running", "other process"} else None

        assert await wait_until(settled, "one ticker running", timeout=20) == [
            "other process",
            "running",
        ]
        await wait_until(lambda: _at_least(first, "s.tick", 3), "ticks", timeout=20)
        ticks = await get_json(first, "/api/v1/triggerinstances", trigger="s.tick", limit=1000)
        numbers = [t["payload"]["n"] for t in ticks]
        assert len(numbers) == len(set(numbers))  # one ticker: no number twice
        runner = first if first.server.app[RUNTIME].sensors.states["s.Ticker"].pid else second
        other = second if runner is first else first
        # The holder goes away: the other process takes the sensor over.
        await runner.close()
        await wait_until(
            lambda: _status_is(other, "s.Ticker", "running"), "the takeover", timeout=20
        )


async def _status_is(client, ref: str, status: str) -> bool:
    return (await sensor_states(client))[ref]["status"] == status


async def test_hookyard_sensor_list_shows_states(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    write_pack(packs, "s", SENSORS)
    async with app_client(sensor_settings(tmp_path, [packs])) as client:

        async def crashed():
            state = (await sensor_states(client))["s.Broken"]
            return state["last_error"]

        await wait_until(crashed, "the broken sensor reported", timeout=20)
        url = str(client.make_url("")).rstrip("/")
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKYARD_")}
        command = [sys.executable, "-m", "engine", "sensor", "list", "--url", url]
        table = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, timeout=30, env=env
        )
        assert table.returncode == 0, table.stderr
        row = next(line for line in table.stdout.splitlines() if "s.Broken" in line)
        assert "SyntaxError" in row or "exited with code 1" in row
        listed = await asyncio.to_thread(
            subprocess.run,
            [*command, "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        states = {s["ref"]: s for s in json.loads(listed.stdout)}
        assert "SyntaxError" in states["s.Broken"]["last_error"]
        assert states["s.Keeper"]["status"] == "running"


async def test_a_sensor_killed_mid_poll_is_restarted_and_loses_nothing(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    write_pack(packs, "s", ONE_TICKER)
    async with app_client(sensor_settings(tmp_path, [packs])) as client:
        await wait_until(lambda: _at_least(client, "s.tick", 5), "ticks", timeout=20)
        first_pid = (await sensor_states(client))["s.Ticker"]["pid"]
        os.kill(first_pid, signal.SIGKILL)

        async def back():
            state = (await sensor_states(client))["s.Ticker"]
            running_again = state["status"] == "running" and state["pid"] != first_pid
            return state if running_again and state["restarts"] == 1 else None

        state = await wait_until(back, "the ticker restarted", timeout=20)
        assert "exited with code -9" in state["last_error"]

        async def second_run_ticked():
            found = await get_json(client, "/api/v1/triggerinstances", trigger="s.tick", limit=1000)
            return found if sum(t["payload"]["n"] == 1 for t in found) == 2 else None

        ticks = await wait_until(second_run_ticked, "the second run's first tick", timeout=20)
        in_order = [t["payload"]["n"] for t in sorted(ticks, key=lambda t: t["occurrence_time"])]
        # The first run's numbers, up to where the second run starts from 1 again, have no
        # gap: every dispatch written before the kill was stored.
        restart_at = in_order.index(1, 1)
        assert in_order[:restart_at] == list(range(1, restart_at + 1))
        assert restart_at >= 5


async def test_sensor_process_spawn_and_exit_fire_when_a_rule_listens(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    write_pack(
        packs,
        "s",
        {
            "sensors/broken.yaml": SENSORS["sensors/broken.yaml"],
            "sensors/broken.py": SENSORS["sensors/broken.py"],
            "triggers/tick.yaml": TICK,
        },
    )
    rules = {
        "spawn": "name: spawned\npack: t\ntrigger: {type: core.st2.sensor.process_spawn}\n"
        "action: {ref: core.noop}\n",
    }
    settings = settings_for(tmp_path, packs=[packs], rules=rules, roles=("api", "sensors"))
    async with app_client(settings) as client:
        spawned = await wait_until(
            lambda: get_json(
                client, "/api/v1/triggerinstances", trigger="core.st2.sensor.process_spawn"
            ),
            "a spawn instance",
            timeout=20,
        )
        assert spawned[0]["payload"]["id"] == "s.Broken"
        assert isinstance(spawned[0]["payload"]["pid"], int)
        await wait_until(
            lambda: _at_least(client, "core.st2.sensor.process_spawn", 2), "a respawn", timeout=20
        )
        # No rule listens to the exit trigger: none is written.
        assert await count(client, "core.st2.sensor.process_exit") == 0


async def test_sensor_process_exit_carries_the_exit_code(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    broken = {k: v for k, v in SENSORS.items() if "broken" in k or k.startswith("triggers/t")}
    write_pack(packs, "s", broken)
    rule = (
        "name: ended\npack: t\ntrigger: {type: core.st2.sensor.process_exit}\n"
        "action: {ref: core.noop}\n"
    )
    settings = settings_for(tmp_path, packs=[packs], rules={"exit": rule}, roles=("api", "sensors"))
    async with app_client(settings) as client:
        ended = await wait_until(
            lambda: get_json(
                client, "/api/v1/triggerinstances", trigger="core.st2.sensor.process_exit"
            ),
            "an exit instance",
            timeout=20,
        )
        assert (ended[0]["payload"]["id"], ended[0]["payload"]["exit_code"]) == ("s.Broken", 1)


ENV_SENSOR = {
    "triggers/seen.yaml": "name: seen\n",
    "sensors/snoop.yaml": sensor_yaml("Snoop", "snoop.py", 0.2),
    "sensors/snoop.py": """\
        import os

        from st2reactor.sensor.base import PollingSensor

        class Snoop(PollingSensor):
            def setup(self):
                pass

            def poll(self):
                self.sensor_service.dispatch("e.seen", {"names": sorted(os.environ)})
    """,
}


async def test_a_sensor_sees_none_of_the_engines_secrets(tmp_path: Path, monkeypatch) -> None:
    # What the engine's own environment may carry: its store URL, keys, webhook secrets.
    monkeypatch.setenv("HOOKYARD_DATASTORE__ENCRYPTION_KEY", "a-key-of-the-engine")
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", "a-secret-of-the-engine")
    packs = tmp_path / "packs"
    write_pack(packs, "e", ENV_SENSOR)
    async with app_client(sensor_settings(tmp_path, [packs])) as client:
        instances = await wait_until(
            lambda: get_json(client, "/api/v1/triggerinstances", trigger="e.seen"),
            "the sensor's dispatch",
            timeout=20,
        )
        names = set(instances[0]["payload"]["names"])
        assert "PATH" in names
        assert not {"HOOKYARD_DATASTORE__ENCRYPTION_KEY", "GITHUB_WEBHOOK_SECRET"} & names
        assert not any(name.startswith("HOOKYARD_") for name in names)
