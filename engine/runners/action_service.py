"""``self.action_service`` of a Python action, in its child process (engine.runners.python_host).

Facts from StackStorm (python_runner's ``ActionService``, st2common's
``services/datastore.py``): ``get_value(name, local=True, scope="system", decrypt=False)``,
``set_value(name, value, ttl=None, local=True, scope="system", encrypt=False)``,
``delete_value(name, local=True, scope="system")`` and ``list_values(local=True,
prefix=None, limit=None, offset=None)``. ``local=True`` names the key
``<pack>.<ActionClass>:<name>``; only the system scope is supported (any other is a
ValueError); ``set_value`` stores ``str(value)``; ``get_value`` answers None for a key that
is not there, ``delete_value`` False. Hookyard adds ``dispatch_trigger(trigger, payload,
trace_tag)``, the path ``core.inject_trigger`` takes.

The child never holds the store: each call is one JSON line on the request pipe, answered
by one line on the reply pipe; the engine (engine.runners.action_service_relay, then the
execution worker) checks it, prefixes local names with the pack it knows, and stores.
"""

from __future__ import annotations

import json
import threading
from typing import IO, Any

from engine.runners.sensor_api import KeyValuePair

SYSTEM_SCOPE = "system"
# A value (or a dispatched payload) above this many bytes is refused before it is sent;
# the engine refuses it too (engine.runners.action_service_relay).
MAX_VALUE_BYTES = 1024 * 1024


class ActionServiceError(Exception):
    """Raised in the action when the engine refused a datastore call or a dispatch."""


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"a datastore key name must be a string, not {type(name).__name__}")
    if not name:
        raise ValueError("a datastore key name must not be empty")
    return name


def _check_scope(scope: Any) -> None:
    if scope != SYSTEM_SCOPE:
        # StackStorm's message, word for word: actions reach the system scope only.
        raise ValueError(f"Scope {scope} is unsupported.")


class ActionService:
    def __init__(self, class_name: str, requests: IO[str], replies: IO[str]) -> None:
        self._class_name = class_name
        self._requests = requests
        self._replies = replies
        self._lock = threading.Lock()  # an action may call from its own threads
        self._next_id = 0

    # --- the datastore -------------------------------------------------------------

    def get_value(
        self, name: str, local: bool = True, scope: str = SYSTEM_SCOPE, decrypt: bool = False
    ) -> str | None:
        _check_scope(scope)
        args = {"name": _check_name(name), "local": bool(local), "decrypt": bool(decrypt)}
        return self._call("kv", method="get", args=args)

    def set_value(
        self,
        name: str,
        value: Any,
        ttl: int | None = None,
        local: bool = True,
        scope: str = SYSTEM_SCOPE,
        encrypt: bool = False,
    ) -> bool:
        _check_scope(scope)
        text = str(value)
        size = len(text.encode("utf-8", errors="replace"))
        if size > MAX_VALUE_BYTES:
            raise ValueError(
                f"datastore value of {size} bytes is over the limit of {MAX_VALUE_BYTES} bytes"
            )
        args = {
            "name": _check_name(name),
            "value": text,
            "ttl": ttl,
            "local": bool(local),
            "encrypt": bool(encrypt),
        }
        self._call("kv", method="set", args=args)
        return True

    def delete_value(self, name: str, local: bool = True, scope: str = SYSTEM_SCOPE) -> bool:
        _check_scope(scope)
        args = {"name": _check_name(name), "local": bool(local)}
        return bool(self._call("kv", method="delete", args=args))

    def list_values(
        self,
        local: bool = True,
        prefix: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[KeyValuePair]:
        if prefix is not None and not isinstance(prefix, str):
            raise TypeError(f"a key prefix must be a string, not {type(prefix).__name__}")
        items = self._call("kv", method="list", args={"local": bool(local), "prefix": prefix})
        start = int(offset or 0)
        items = items[start : start + int(limit)] if limit else items[start:]
        return [KeyValuePair(item) for item in items]

    # --- triggers ------------------------------------------------------------------

    def dispatch_trigger(
        self, trigger: str, payload: Any = None, trace_tag: str | None = None
    ) -> str:
        """Store a trigger instance as /webhooks/st2 does; its id (ActionServiceError when
        the engine refuses it: unknown type, payload against its schema)."""
        if not isinstance(trigger, str) or not trigger:
            raise TypeError("a trigger must be a trigger type ref such as mypack.my_trigger")
        return self._call("dispatch", trigger=trigger, payload=payload, trace_tag=trace_tag)

    # --- the wire ------------------------------------------------------------------

    def _call(self, op: str, **fields: Any) -> Any:
        with self._lock:
            self._next_id += 1
            message = {"id": self._next_id, "op": op, "class": self._class_name, **fields}
            try:
                self._requests.write(json.dumps(message, default=str) + "\n")
                self._requests.flush()
            except (BrokenPipeError, OSError) as exc:
                raise ActionServiceError(f"the engine closed the action's channel: {exc}") from None
            line = self._replies.readline()
        if not line:
            raise ActionServiceError("the engine closed the action's channel")
        reply = json.loads(line)
        if reply.get("error"):
            raise ActionServiceError(reply["error"])
        return reply.get("result")
