"""What crosses between the API process and its ingest writer child, and how.

Frames on a private socket pair: a 4-byte big-endian length, then a `marshal`-encoded
tuple (the standard library's fastest encoding of tuples of str, bytes, int and JSON
data; both ends are the same Python).
- API → child: first ("open", protocol, store settings, base folder, log level, log
  format, secrets to scrub, the most fields a form body may have); then
  (seq, [item, ...]) per batch, an item being `item_to_wire(NewTriggerInstance)`.
- child → API: ("ready",) or ("failed", reason) after opening the store; then per batch
  (seq, True, [(id, duplicate) or (None, error kind, message, status), ...], seconds) or,
  when the batch failed, (seq, False, error kind, message, retry_after).
"""

from __future__ import annotations

import asyncio
import marshal
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.errors import EngineError, IngestError, StoreBusy, StoreError, StoreUnavailable
from engine.ingest.bodies import stored_body_text
from engine.model.hook_payload import NamedHookPost
from engine.model.records import Accepted, NewTriggerInstance
from engine.store.codec import UnstorableValue, as_utc

# What the two ends speak: a child from another version of Hookyard (an upgrade in place
# between the API process's start and a restart) refuses to run.
PROTOCOL = 3
# The length before each frame.
LENGTH = struct.Struct("!I")
# Errors that cross the socket keep their type (the API answers them differently).
ERROR_KINDS: dict[str, type[StoreError]] = {
    "StoreBusy": StoreBusy,
    "StoreUnavailable": StoreUnavailable,
    "UnstorableValue": UnstorableValue,
    "StoreError": StoreError,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

Wire = tuple[Any, ...]


def frame(message: tuple[Any, ...]) -> bytes:
    """A message as a frame: its length, then its marshal."""
    data = marshal.dumps(message)
    return LENGTH.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> tuple[Any, ...]:
    """The next message on `reader` (IncompleteReadError once the other end is gone)."""
    (length,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
    return marshal.loads(await reader.readexactly(length))


def item_to_wire(item: NewTriggerInstance) -> Wire:
    """An item as the child rebuilds it. A named-hook post travels as its raw parts; any
    other payload as data (JSON data is marshal data)."""
    occurred = (as_utc(item.occurrence_time) - _EPOCH) // _MICROSECOND
    post = item.post
    parts = None
    if post is not None:
        parts = (
            post.raw_headers,
            post.dropped,
            post.body_text,
            post.content_type,
            post.body,
            post.method,
            post.path,
            post.query,
        )
    return (item.id, item.trigger, item.webhook, item.dedupe_key, occurred, item.payload, parts)


def item_from_wire(wire: Wire, max_form_fields: int) -> NewTriggerInstance:
    """The item `wire` carries, its post's body parsed here when the API process left it
    (IngestError or UnstorableValue when the body is refused)."""
    instance_id, trigger, webhook, dedupe_key, occurred, payload, parts = wire
    post = None
    if parts is not None:
        raw_headers, dropped, text, content_type, body, method, path, query = parts
        if text is None:
            text = stored_body_text(content_type, body, max_form_fields=max_form_fields)
        post = NamedHookPost(raw_headers, dropped, text, method=method, path=path, query=query)
    return NewTriggerInstance(
        trigger=trigger,
        payload=payload,
        webhook=webhook,
        dedupe_key=dedupe_key,
        occurrence_time=_EPOCH + occurred * _MICROSECOND,
        id=instance_id,
        post=post,
    )


def answer_from_wire(result: tuple[Any, ...]) -> Accepted | EngineError:
    """One item's answer: (id, duplicate), or (None, error kind, message, status) for a
    request whose body the child refused."""
    if result[0] is not None:
        return Accepted(result[0], result[1])
    _, kind, message, status = result
    return IngestError(message, status) if kind == "IngestError" else UnstorableValue(message)
