"""What a Python action's ``self.action_service`` may do with the datastore, decided in
the engine (the child only asks: engine.runners.action_service_relay).

As StackStorm's ActionService: the system scope only; ``local=True`` names the key
``<pack>.<ActionClass>:<name>`` — the pack is the one the engine ran the action from, so a
local name can never land outside it, whatever the child sends. ``local=False`` reaches
any system key, as in StackStorm. A value over the action service's limit is refused.
"""

from __future__ import annotations

from typing import Any

from engine.errors import EngineError, NotFound
from engine.model.kv import check_name, check_ttl
from engine.process.runtime import Runtime
from engine.runners.action_service import MAX_VALUE_BYTES
from engine.runners.base import ActionDatastore

SYSTEM = "system"
MAX_CLASS_NAME_CHARS = 255


def _local_prefix(pack: str, class_name: Any) -> str:
    if (
        not isinstance(class_name, str)
        or not class_name.isidentifier()
        or len(class_name) > MAX_CLASS_NAME_CHARS
    ):
        raise EngineError(f"action_service: {str(class_name)[:60]!r} is not an action class name")
    return f"{pack}.{class_name}:"


def _key_name(pack: str, class_name: Any, args: dict[str, Any]) -> str:
    name = args.get("name")
    if not isinstance(name, str):
        raise EngineError(f"a datastore key name must be a string, not {type(name).__name__}")
    full = _local_prefix(pack, class_name) + name if args.get("local", True) else name
    return check_name(full)


def action_datastore(runtime: Runtime, pack: str) -> ActionDatastore:
    """The datastore calls of one run of an action from ``pack``."""

    async def call(class_name: Any, method: Any, args: dict[str, Any]) -> Any:
        datastore = runtime.datastore
        if method == "get":
            name = _key_name(pack, class_name, args)
            try:
                pair = await datastore.get(name, scope=SYSTEM)
            except NotFound:
                return None
            return datastore.reveal(pair) if args.get("decrypt") or not pair.secret else pair.value
        if method == "set":
            name = _key_name(pack, class_name, args)
            value = args.get("value")
            if not isinstance(value, str):
                raise EngineError("a datastore value must be a string")
            if len(value.encode("utf-8", errors="replace")) > MAX_VALUE_BYTES:
                raise EngineError(f"datastore value over the limit of {MAX_VALUE_BYTES} bytes")
            await datastore.set(
                name, value, scope=SYSTEM, secret=bool(args.get("encrypt")),
                ttl=check_ttl(args.get("ttl")),
            )  # fmt: skip
            return True
        if method == "delete":
            try:
                return await datastore.delete(_key_name(pack, class_name, args), scope=SYSTEM)
            except NotFound:
                return False
        if method == "list":
            prefix = args.get("prefix")
            if prefix is not None and not isinstance(prefix, str):
                raise EngineError("a key prefix must be a string")
            if args.get("local", True):
                prefix = _local_prefix(pack, class_name) + (prefix or "")
            pairs = await datastore.list(prefix=prefix or None, scope=SYSTEM)
            return [datastore.to_api(pair) for pair in pairs]
        raise EngineError(f"unknown datastore method {str(method)[:40]!r}")

    return call
