"""The child process of one sensor: load its class, run it until told to stop.

Invoked as ``python -m engine.runners.sensor_host``. The first line on stdin is the JSON
spec ``{"entry_point", "class_name", "ref", "poll_interval", "config", "log_level"}``;
later lines are the parent's replies to datastore calls and trigger events
(``{"op": "add_trigger" | "update_trigger" | "remove_trigger", "trigger": {...}}``, sent
once the sensor's setup() has run: its triggers then, and their changes as rules come
and go), which a thread of their own hands to the sensor's methods of those names one
after the other (a handler may call the datastore; one that raises is reported on
stderr and the sensor goes on). Requests go out on the original stdout, one JSON line
each; the sensor's own prints are sent to stderr, which the parent
logs. SIGTERM stops it: ``cleanup()`` runs, then the process exits 0. Any exception that
leaves the sensor exits 1 with its traceback on stderr.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import os
import queue
import signal
import sys
import threading
import traceback
import types
from typing import Any

from engine.runners import sensor_api

EXIT_SENSOR_FAILED = 1
TRIGGER_EVENTS = ("add_trigger", "update_trigger", "remove_trigger")


class _Stop(BaseException):
    """Raised in the main thread by SIGTERM (a BaseException: sensors catch Exception)."""


def _alias_st2reactor() -> None:
    if importlib.util.find_spec("st2reactor") is not None:
        return
    names = ("st2reactor", "st2reactor.sensor", "st2reactor.sensor.base")
    for name in names:
        module = types.ModuleType(name)
        module.__path__ = []
        sys.modules[name] = module
    base = sys.modules["st2reactor.sensor.base"]
    base.Sensor = sensor_api.Sensor  # type: ignore[attr-defined]
    base.PollingSensor = sensor_api.PollingSensor  # type: ignore[attr-defined]
    sys.modules["st2reactor"].sensor = sys.modules["st2reactor.sensor"]  # type: ignore[attr-defined]
    sys.modules["st2reactor.sensor"].base = base  # type: ignore[attr-defined]


class _Inbox:
    """The parent's lines on stdin, sorted: datastore replies go to SensorService (its
    `readline`, in order), trigger events to the sensor's handlers, run in a thread of
    their own so that a handler calling the datastore does not wait on itself."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._replies: queue.Queue[str] = queue.Queue()
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.sensor: Any = None

    def start(self) -> None:
        threading.Thread(target=self._read, name="sensor inbox", daemon=True).start()
        threading.Thread(target=self._handle, name="sensor triggers", daemon=True).start()

    def readline(self) -> str:
        line = self._replies.get()
        if not line:
            self._replies.put(line)  # closed: every later call sees it too
        return line

    def _read(self) -> None:
        for line in self._stream:
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if isinstance(message, dict) and message.get("op") in TRIGGER_EVENTS:
                self._events.put(message)
            else:
                self._replies.put(line)
        self._replies.put("")  # the parent closed the channel

    def _handle(self) -> None:
        while True:
            message = self._events.get()
            handler = getattr(self.sensor, message["op"], None)
            if handler is None:
                continue
            try:
                handler(trigger=message.get("trigger"))
            except Exception:
                traceback.print_exc()


def load_sensor_class(entry_point: str, class_name: str) -> type:
    directory = os.path.dirname(os.path.abspath(entry_point))
    pack_dir = os.path.dirname(directory)
    # As StackStorm: the sensor's folder and the pack's lib/ are importable.
    for path in (os.path.join(pack_dir, "lib"), directory):
        if path not in sys.path:
            sys.path.insert(0, path)
    module_name = "hookyard_sensor_" + os.path.splitext(os.path.basename(entry_point))[0]
    spec = importlib.util.spec_from_file_location(module_name, entry_point)
    if spec is None or spec.loader is None:
        raise ImportError(f"{entry_point}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    found = getattr(module, class_name, None)
    if not inspect.isclass(found):
        raise ImportError(f"{entry_point}: no class {class_name!r}")
    return found


def _build(cls: type, service: Any, spec: dict[str, Any]) -> Any:
    config = spec.get("config") or {}
    if issubclass(cls, sensor_api.PollingSensor) and spec.get("poll_interval") is not None:
        return cls(sensor_service=service, config=config, poll_interval=spec["poll_interval"])
    return cls(sensor_service=service, config=config)


def main() -> int:
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the sensor's prints go to stderr, never into the channel
    sys.stdout = sys.stderr
    spec = json.loads(sys.stdin.readline())
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, str(spec.get("log_level", "INFO")).upper(), logging.INFO),
        format="%(levelname)s %(name)s: %(message)s",
    )

    def stop(signum: int, frame: Any) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    _alias_st2reactor()
    inbox = _Inbox(sys.stdin)
    inbox.start()
    service = sensor_api.SensorService(spec["ref"], channel, inbox)
    sensor = None
    try:
        cls = load_sensor_class(spec["entry_point"], spec["class_name"])
        sensor = _build(cls, service, spec)
        sensor.setup()
        inbox.sensor = sensor
        channel.write(json.dumps({"op": "running"}) + "\n")
        sensor.run()
        return 0  # run() returned: the sensor is done
    except _Stop:
        if sensor is not None:
            try:
                sensor.cleanup()
            except Exception:
                traceback.print_exc()
        return 0
    except Exception:
        traceback.print_exc()
        return EXIT_SENSOR_FAILED


if __name__ == "__main__":
    sys.exit(main())
