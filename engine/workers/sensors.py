"""The sensors role: each enabled sensor of the loaded packs in a supervised child process
(engine.runners.sensor_host), run once across every process on the store.

Per sensor: take its exclusive lock (engine.store.exclusive; a process that dies drops
it and another takes the sensor over), start the child, watch the lock (on PostgreSQL
the server may end the lock's session while this process lives, and another process
then takes the sensor: the child is killed at once and the lock taken again when
free), tell it its triggers (StackStorm's add_trigger/update_trigger/remove_trigger:
once set up, every trigger of its trigger types, then the changes as rules using them
are added, changed or removed, through the API or a reload), serve its requests (dispatch: a
trigger instance through engine.workers.dispatch, the checks /webhooks/st2 applies;
datastore calls), log its stderr. A child that exits, crashes or breaks the protocol is
logged with the end of its stderr (its traceback) and restarted after a backoff that
doubles up to a minute. Nothing a sensor does stops serve:
- its messages are read one line at a time, each within ingest.max_body (a longer line
  kills and restarts it);
- its dispatches are stored one after the other while the backlog is under
  ingest.max_backlog (a flood waits; the pipe fills and the sensor blocks on its write);
- a sensor that hangs (even in setup) only holds its own child, killed on stop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import sys
import time
from typing import Any

from engine.errors import EngineError, NotFound
from engine.model.records import NewTriggerInstance
from engine.packs.sensors import SensorSpec
from engine.packs.triggers import derived_triggers
from engine.process.runtime import Runtime
from engine.runners.pack_virtualenv import ENGINE_ROOT, pack_interpreter
from engine.runners.process import DEFAULT_PATH, INHERITED_ENV
from engine.store.exclusive import Exclusive, try_exclusive
from engine.workers.dispatch import check_dispatch

log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0
# A sensor that ran this long before dying starts its backoff over.
HEALTHY_RUN = 60.0
# How often a process without a sensor's lock tries again to take it.
LOCK_RETRY = 2.0
# How often a held lock is checked (a lost one stops the sensor within about this long).
LOCK_CHECK = 1.0
# How often a running sensor's triggers are compared with the rules' (a cheap identity
# check of the rule set; they are derived again only when it changed).
TRIGGER_FOLLOW = 0.25
STOP_GRACE = 5.0
STDERR_TAIL = 40
# How long a dispatch waits before looking at a full backlog again.
FLOOD_WAIT = 0.2
SPAWN_TRIGGER = "core.st2.sensor.process_spawn"
EXIT_TRIGGER = "core.st2.sensor.process_exit"


class SensorState:
    def __init__(self, spec: SensorSpec) -> None:
        self.spec = spec
        self.status = "starting" if spec.enabled else "disabled"
        self.restarts = 0
        self.last_error: str | None = None
        self.pid: int | None = None
        self.dispatched = 0
        self.refused = 0

    def to_api(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "pid": self.pid,
            "dispatched": self.dispatched,
            "refused": self.refused,
        }


class SensorSupervisor:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.states: dict[str, SensorState] = {}

    def state(self, ref: str) -> dict[str, Any] | None:
        found = self.states.get(ref)
        return found.to_api() if found is not None else None

    async def run(self, stop: asyncio.Event) -> None:
        specs = self.runtime.packs.sensors()
        for spec in specs:
            self.states[spec.ref] = SensorState(spec)
        tasks = [
            asyncio.create_task(self._supervise(self.states[s.ref], stop), name=f"sensor {s.ref}")
            for s in specs
            if s.enabled
        ]
        if tasks:
            log.info("sensors role: %d enabled sensor(s)", len(tasks))
        try:
            await stop.wait()
        finally:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _supervise(self, state: SensorState, stop: asyncio.Event) -> None:
        backoff = 1.0
        lock: Exclusive | None = None
        try:
            while not stop.is_set():
                if lock is None:
                    lock = await self._take_lock(state)
                    if lock is None:
                        await _wait(stop, LOCK_RETRY)
                        continue
                why = await lock.problem()
                started = time.monotonic()
                if why is None:
                    why = await self._run_child(state, stop, lock)
                if stop.is_set():
                    break
                if why is not None:
                    # Another process may run it now: stopped (above), the lock dropped,
                    # and taken again once free.
                    await lock.release()
                    lock = None
                    state.status = "lock lost"
                    state.last_error = f"its lock was lost ({why}); the sensor was stopped"
                    log.error("sensor %s: %s", state.spec.ref, state.last_error)
                    continue
                if time.monotonic() - started >= HEALTHY_RUN:
                    backoff = 1.0
                state.restarts += 1
                state.status = "backoff"
                log.error(
                    "sensor %s stopped: %s; restarting in %.0f s",
                    state.spec.ref,
                    state.last_error,
                    backoff,
                )
                await _wait(stop, backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            state.status = "stopped" if state.status != "other process" else state.status
            state.pid = None
            if lock is not None:
                await lock.release()

    async def _take_lock(self, state: SensorState) -> Exclusive | None:
        try:
            lock = await try_exclusive(self.runtime.store, f"sensor:{state.spec.ref}")
        except EngineError as exc:
            log.warning("sensor %s: cannot take its lock: %s", state.spec.ref, exc)
            return None
        if lock is None:
            state.status = "other process"
        return lock

    async def _run_child(
        self, state: SensorState, stop: asyncio.Event, lock: Exclusive
    ) -> str | None:
        """Run the sensor until it ends, `stop`, or its lock is lost (then: why)."""
        spec = state.spec
        settings = self.runtime.settings
        pack = self.runtime.packs.packs.get(spec.pack)
        request = {
            "entry_point": spec.entry_point,
            "class_name": spec.class_name,
            "ref": spec.ref,
            "poll_interval": spec.poll_interval,
            "config": dict(pack.config) if pack is not None else {},
            "log_level": settings.logging.level,
        }
        limit = settings.ingest.max_body * 2 + 65536  # a JSON line holds the payload, escaped
        try:
            venvs = settings.resolve_path(settings.packs.virtualenvs_dir)
            child = await asyncio.create_subprocess_exec(
                pack_interpreter(venvs, spec.pack) or sys.executable,
                "-m",
                "engine.runners.sensor_host",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=limit,
                start_new_session=True,
                cwd=os.path.dirname(spec.entry_point),
                env=_child_env(spec),
            )
        except OSError as exc:
            state.last_error = f"cannot start: {exc}"
            return None
        state.pid = child.pid
        state.status = "starting"
        await self._system_trigger(SPAWN_TRIGGER, {"id": spec.ref, "pid": child.pid})
        tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        assert child.stdin is not None and child.stdout is not None and child.stderr is not None
        child.stdin.write(json.dumps(request).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await child.stdin.drain()
        errors = asyncio.create_task(_log_stderr(spec.ref, child.stderr, tail))
        running = asyncio.Event()
        serving = asyncio.create_task(self._serve(state, child, running))
        following = asyncio.create_task(self._follow_triggers(state, child, running))
        stopping = asyncio.create_task(stop.wait())
        watching = asyncio.create_task(lock.lost(LOCK_CHECK))
        protocol_error = lost = None
        try:
            done, _ = await asyncio.wait(
                {serving, stopping, watching}, return_when=asyncio.FIRST_COMPLETED
            )
            if serving in done:
                protocol_error = serving.result()
            elif watching in done and not stop.is_set():
                lost = watching.result()
        finally:
            stopping.cancel()
            serving.cancel()
            watching.cancel()
            following.cancel()
            # A lost lock: SIGKILL now, not SIGTERM and a grace (another process may
            # already run this sensor).
            await _end(
                child,
                graceful=stop.is_set() and protocol_error is None and lost is None,
                exiting=serving.done() and not serving.cancelled() and protocol_error is None,
            )
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            await errors
            state.pid = None
        await self._system_trigger(EXIT_TRIGGER, {"id": spec.ref, "exit_code": child.returncode})
        if stop.is_set() or lost is not None:
            return lost
        # The last stderr line first (a traceback's exception: what a table shows).
        text = f"{tail[-1]}\n" + "\n".join(tail) if tail else ""
        state.last_error = protocol_error or (
            f"exited with code {child.returncode}" + (f": {text}" if text else "")
        )
        state.status = "crashed"
        return None

    async def _serve(
        self, state: SensorState, child: asyncio.subprocess.Process, running: asyncio.Event
    ) -> str | None:
        """Handle the child's requests until its stdout closes; a protocol error's reason."""
        assert child.stdout is not None and child.stdin is not None
        while True:
            try:
                line = await child.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):
                return "sent a message over the size limit (ingest.max_body); killed"
            if not line:
                return None
            try:
                message = json.loads(line)
            except (ValueError, RecursionError):  # nested deeper than the parser goes
                return "sent a line that is not JSON; killed"
            if not isinstance(message, dict):
                return "sent a message that is not an object; killed"
            op = message.get("op")
            if op == "running":
                state.status = "running"
                running.set()
            elif op == "dispatch":
                await self._dispatch(state, message)
            elif op == "kv":
                reply = await self._kv(state, message)
                child.stdin.write(json.dumps(reply).encode() + b"\n")
                with contextlib.suppress(ConnectionError):
                    await child.stdin.drain()
            else:
                return f"sent an unknown request {str(op)[:40]!r}; killed"

    async def _follow_triggers(
        self, state: SensorState, child: asyncio.subprocess.Process, running: asyncio.Event
    ) -> None:
        """Once the sensor is set up: add_trigger for each of its triggers, then
        add/update/remove_trigger as the rules (or the packs) change them."""
        await running.wait()
        known: dict[str, dict[str, Any]] = {}
        seen: tuple[Any, Any] | None = None
        while True:
            runtime = self.runtime
            now = (runtime.ruleset, runtime.packs)
            if seen is None or now[0] is not seen[0] or now[1] is not seen[1]:
                seen = now
                wanted = self._triggers_of(state.spec)
                events = [("remove_trigger", t) for i, t in known.items() if i not in wanted]
                for trigger_id, trigger in wanted.items():
                    if trigger_id not in known:
                        events.append(("add_trigger", trigger))
                    elif known[trigger_id] != trigger:
                        events.append(("update_trigger", trigger))
                known = wanted
                if events and not await _send_events(child, events):
                    return  # its stdin closed: it is ending
            await asyncio.sleep(TRIGGER_FOLLOW)

    def _triggers_of(self, spec: SensorSpec) -> dict[str, dict[str, Any]]:
        types = set(spec.trigger_types)
        runtime = self.runtime
        return {
            trigger["id"]: trigger
            for trigger in derived_triggers(runtime.packs.trigger_types(), runtime.ruleset)
            if trigger["type"] in types
        }

    async def _system_trigger(self, trigger: str, details: dict[str, Any]) -> None:
        """A sensor process started or ended, stored only when a rule listens (as the
        generic triggers: nothing written for nobody)."""
        if not self.runtime.ruleset.candidates(trigger):
            return
        payload = {**details, "timestamp": time.time()}
        try:
            await self.runtime.store.add_trigger_instances(
                [NewTriggerInstance(trigger=trigger, payload=payload)]
            )
        except EngineError as exc:
            log.error("%s for sensor %s not stored: %s", trigger, details.get("id"), exc)

    async def _dispatch(self, state: SensorState, message: dict[str, Any]) -> None:
        runtime = self.runtime
        try:
            item = check_dispatch(runtime, message.get("trigger"), message.get("payload"))
        except EngineError as exc:
            state.refused += 1
            log.warning("sensor %s: dispatch refused: %s", state.spec.ref, exc)
            return
        ingest = runtime.settings.ingest
        while (await runtime.store.pending_backlog()) >= ingest.max_backlog:
            await asyncio.sleep(FLOOD_WAIT)  # a flood waits for the rules to catch up
        try:
            await runtime.store.add_trigger_instances([item])
        except EngineError as exc:
            state.refused += 1
            log.error("sensor %s: dispatch not stored: %s", state.spec.ref, exc)
            return
        state.dispatched += 1

    async def _kv(self, state: SensorState, message: dict[str, Any]) -> dict[str, Any]:
        call_id = message.get("id")
        args = message.get("args") if isinstance(message.get("args"), dict) else {}
        datastore = self.runtime.datastore
        try:
            result = await _datastore_call(datastore, message.get("method"), args)
        except NotFound:
            result = None
        except EngineError as exc:
            return {"id": call_id, "error": str(exc)}
        return {"id": call_id, "result": result}


async def _datastore_call(datastore: Any, method: Any, args: dict[str, Any]) -> Any:
    name = str(args.get("name") or "")
    scope = args.get("scope") or "system"
    if method == "get":
        pair = await datastore.get(name, scope=scope)
        return datastore.reveal(pair) if args.get("decrypt") or not pair.secret else pair.value
    if method == "set":
        ttl = args.get("ttl")
        await datastore.set(
            name,
            str(args.get("value")),
            scope=scope,
            secret=bool(args.get("encrypt")),
            ttl=int(ttl) if isinstance(ttl, int | float) and ttl > 0 else None,
        )
        return True
    if method == "list":
        pairs = await datastore.list(prefix=args.get("prefix") or None, scope=scope)
        return [datastore.to_api(pair) for pair in pairs]
    if method == "delete":
        return await datastore.delete(name, scope=scope)
    raise EngineError(f"unknown datastore method {str(method)[:40]!r}")


async def _send_events(
    child: asyncio.subprocess.Process, events: list[tuple[str, dict[str, Any]]]
) -> bool:
    assert child.stdin is not None
    try:
        for op, trigger in events:
            child.stdin.write(json.dumps({"op": op, "trigger": trigger}).encode() + b"\n")
        await child.stdin.drain()
    except (ConnectionError, RuntimeError):
        return False
    return True


async def _log_stderr(ref: str, stream: asyncio.StreamReader, tail: collections.deque) -> None:
    while True:
        try:
            line = await stream.readline()
        except (ValueError, asyncio.LimitOverrunError):
            continue  # an over-long line is dropped, not fatal
        if not line:
            return
        text = line.decode("utf-8", "replace").rstrip()[:2000]
        tail.append(text)
        log.info("sensor %s: %s", ref, text)


async def _end(child: asyncio.subprocess.Process, *, graceful: bool, exiting: bool) -> None:
    """SIGTERM (cleanup runs) when stopping; a child that closed its channel (`exiting`)
    is given STOP_GRACE seconds to exit on its own; then SIGKILL to the whole process
    group, so whatever the sensor started goes with it. Cancelled (serve's own grace ran
    out), it still kills the group and closes the pipes."""
    try:
        if child.returncode is None and (graceful or exiting):
            if graceful:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, 15)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.wait(), STOP_GRACE)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, 9)  # the child if still there, and what it left behind
        if child.stdin is not None:
            child.stdin.close()
        # asyncio's Process has no close(): its transport holds the pipes, some of which
        # we stopped reading (a killed sensor's stdout).
        transport = getattr(child, "_transport", None)
        if transport is not None:
            transport.close()
    await child.wait()


def _child_env(spec: SensorSpec) -> dict[str, str]:
    """As StackStorm's sensor container: PYTHONPATH holds the pack's lib/ and the
    sensor's folder (sensors read it, e.g. the examples FibonacciSensor's payload). Of the
    engine's own environment only what an action gets: a sensor is pack code, and the
    engine's variables hold its store URL, keys and webhook secrets."""
    env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    env.setdefault("PATH", DEFAULT_PATH)
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    # The engine's folder too: a pack's virtualenv does not hold the engine.
    paths = [os.path.join(spec.pack_path, "lib"), os.path.dirname(spec.entry_point), ENGINE_ROOT]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def run_sensors_worker(runtime: Runtime, stop: asyncio.Event) -> None:
    supervisor = SensorSupervisor(runtime)
    runtime.sensors = supervisor
    await supervisor.run(stop)
