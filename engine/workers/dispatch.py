"""Storing a trigger instance from inside the engine (core.inject_trigger,
core.announcement, a sensor's dispatch) by the rules /webhooks/st2 applies: the trigger
type must be registered by a pack or listened to by a rule, the payload must fit the
type's payload_schema and the ingest body limit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from engine.errors import IngestError
from engine.model.names import MAX_REF_CHARS, too_long
from engine.model.records import NewTriggerInstance
from engine.process.runtime import Runtime
from engine.store import codec


def check_dispatch(runtime: Runtime, trigger: Any, payload: Any) -> NewTriggerInstance:
    """The instance to store, or IngestError saying why it is refused."""
    if not isinstance(trigger, str) or not trigger:
        raise IngestError("the trigger must be a trigger type ref such as mypack.my_trigger")
    if len(trigger) > MAX_REF_CHARS:
        raise IngestError(f"trigger ref {too_long(len(trigger), MAX_REF_CHARS)}")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise IngestError("the payload must be an object")
    size = len(codec.dumps(payload, "the trigger payload").encode())
    limit = runtime.settings.ingest.max_body
    if size > limit:
        raise IngestError(f"payload of {size} bytes is over the limit of {limit} (ingest.max_body)")
    trigger_type = runtime.packs.trigger_type(trigger)
    if trigger_type is not None:
        trigger_type.validate_payload(payload)
    elif trigger not in runtime.known_trigger_types:
        raise IngestError(
            f"unknown trigger type {trigger!r}: no pack registers it and no loaded rule "
            "listens to it"
        )
    return NewTriggerInstance(trigger=trigger, payload=payload)


def dispatcher(runtime: Runtime) -> Callable[[str, Any, str | None], Awaitable[str]]:
    """`dispatch(trigger, payload, trace_tag)` -> the stored instance's id."""

    async def dispatch(trigger: str, payload: Any, trace_tag: str | None = None) -> str:
        # The trace tag is accepted for StackStorm's signature; Hookyard has no traces.
        item = check_dispatch(runtime, trigger, payload)
        [accepted] = await runtime.store.add_trigger_instances([item])
        return accepted.id

    return dispatch
