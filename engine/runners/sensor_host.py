"""The child process of one sensor: load its class, run it until told to stop.

Invoked as ``python -m engine.runners.sensor_host``. The first line on stdin is the JSON
spec ``{"entry_point", "class_name", "ref", "poll_interval", "config", "log_level"}``;
later lines are the parent's replies to datastore calls. Requests go out on the original
stdout, one JSON line each; the sensor's own prints are sent to stderr, which the parent
logs. SIGTERM stops it: ``cleanup()`` runs, then the process exits 0. Any exception that
leaves the sensor exits 1 with its traceback on stderr.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import os
import signal
import sys
import traceback
import types
from typing import Any

from engine.runners import sensor_api

EXIT_SENSOR_FAILED = 1


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
    service = sensor_api.SensorService(spec["ref"], channel, sys.stdin)
    sensor = None
    try:
        cls = load_sensor_class(spec["entry_point"], spec["class_name"])
        sensor = _build(cls, service, spec)
        sensor.setup()
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
