"""What a sensor class sees, in its child process (engine.runners.sensor_host): the base
classes StackStorm packs import as ``st2reactor.sensor.base.Sensor`` / ``PollingSensor``,
and ``sensor_service``.

Facts from StackStorm (st2reactor/sensor/base.py, st2reactor/container/sensor_wrapper.py):
a sensor is built as ``cls(sensor_service=..., config=...)`` (a polling one also with
``poll_interval``); ``setup()`` once, then ``run()``, and ``cleanup()`` on stop; a polling
sensor's ``run()`` calls ``poll()`` every ``poll_interval`` seconds. ``sensor_service``
offers ``get_logger``, ``dispatch(trigger, payload, trace_tag)`` and the datastore
(``get_value``, ``set_value``, ``list_values``, ``delete_value``) where ``local=True``
(the default) prefixes names with ``<pack>.<SensorClass>:``.

The service talks to the parent over the child's stdout (requests, one JSON line each)
and stdin (replies); the parent checks and stores (engine.workers.sensors).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import IO, Any

SYSTEM_SCOPE = "system"
USER_SCOPE = "user"


class Sensor:
    def __init__(self, sensor_service: Any, config: dict | None = None) -> None:
        self._sensor_service = sensor_service
        self.sensor_service = sensor_service
        self._config = config or {}
        self.config = self._config

    def setup(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        pass

    def add_trigger(self, trigger: Any) -> None:
        pass

    def update_trigger(self, trigger: Any) -> None:
        pass

    def remove_trigger(self, trigger: Any) -> None:
        pass


class PollingSensor(Sensor):
    def __init__(
        self, sensor_service: Any, config: dict | None = None, poll_interval: float = 5
    ) -> None:
        super().__init__(sensor_service=sensor_service, config=config)
        self._poll_interval = poll_interval

    def poll(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        while True:
            self.poll()
            time.sleep(self._poll_interval)

    def get_poll_interval(self) -> float:
        return self._poll_interval

    def set_poll_interval(self, poll_interval: float) -> None:
        self._poll_interval = poll_interval


class KeyValuePair:
    """What list_values returns, as StackStorm's client models it."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.name = data.get("name")
        self.value = data.get("value")
        self.scope = data.get("scope")
        self.secret = data.get("secret", False)
        self.expire_timestamp = data.get("expire_timestamp")

    def __repr__(self) -> str:
        return f"<KeyValuePair name={self.name!r}>"


class SensorServiceError(Exception):
    """A datastore call the parent refused."""


class SensorService:
    def __init__(self, sensor_ref: str, requests: IO[str], replies: IO[str]) -> None:
        self._ref = sensor_ref
        self._requests = requests
        self._replies = replies
        self._lock = threading.Lock()  # sensors may call from their own threads
        self._next_id = 0

    # --- triggers ----------------------------------------------------------------

    def dispatch(self, trigger: Any, payload: Any = None, trace_tag: str | None = None) -> None:
        """Queue a trigger instance; the parent validates and stores it (never raises for
        a refused payload: it is logged by the parent, as StackStorm logs it)."""
        if isinstance(trigger, dict):  # {"name": ..., "pack": ...} as StackStorm allows
            trigger = f"{trigger.get('pack')}.{trigger.get('name')}"
        self._send(
            {"op": "dispatch", "trigger": trigger, "payload": payload, "trace_tag": trace_tag}
        )

    def dispatch_with_context(
        self, trigger: Any, payload: Any = None, trace_context: Any = None
    ) -> None:
        self.dispatch(trigger, payload)

    def get_logger(self, name: str) -> logging.Logger:
        return logging.getLogger(f"sensor.{self._ref}.{name}")

    # --- the datastore -----------------------------------------------------------

    def _name(self, name: str, local: bool) -> str:
        return f"{self._ref}:{name}" if local else name

    def get_value(
        self, name: str, local: bool = True, scope: str = SYSTEM_SCOPE, decrypt: bool = False
    ) -> Any:
        return self._call("get", name=self._name(name, local), scope=scope, decrypt=decrypt)

    def set_value(
        self,
        name: str,
        value: Any,
        ttl: int | None = None,
        local: bool = True,
        scope: str = SYSTEM_SCOPE,
        encrypt: bool = False,
    ) -> bool:
        self._call(
            "set",
            name=self._name(name, local),
            value=value if isinstance(value, str) else json.dumps(value),
            ttl=ttl,
            scope=scope,
            encrypt=encrypt,
        )
        return True

    def list_values(
        self, local: bool = True, prefix: str | None = None, scope: str = SYSTEM_SCOPE
    ) -> list[KeyValuePair]:
        full = self._name(prefix or "", local) if local else prefix
        return [KeyValuePair(item) for item in self._call("list", prefix=full, scope=scope)]

    def delete_value(self, name: str, local: bool = True, scope: str = SYSTEM_SCOPE) -> bool:
        return bool(self._call("delete", name=self._name(name, local), scope=scope))

    # --- the wire ----------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, default=str)
        with self._lock:
            self._requests.write(line + "\n")
            self._requests.flush()

    def _call(self, method: str, **args: Any) -> Any:
        with self._lock:
            self._next_id += 1
            call_id = self._next_id
            self._requests.write(
                json.dumps({"op": "kv", "id": call_id, "method": method, "args": args}) + "\n"
            )
            self._requests.flush()
            line = self._replies.readline()
        if not line:
            raise SensorServiceError("the engine closed the sensor's channel")
        reply = json.loads(line)
        if reply.get("error"):
            raise SensorServiceError(reply["error"])
        return reply.get("result")
