"""The ingest writer child process, run as `python -m engine.ingest.writer_child`.

engine.ingest.writer is the API process's side; engine.ingest.writer_wire what they
exchange. The child opens the store with the settings it is sent, then for each batch
parses the bodies the API process left to it (a body it refuses is that request's 400 or
415, and the rest of the batch is written), builds the payloads
(engine.model.hook_payload), writes the batch atomically with the store's own
`add_trigger_instances`, and answers. It exits when its socket closes (the API process
stopped, even by SIGKILL) after finishing the batches in hand; it ignores SIGINT and
SIGTERM, so a signal sent to the whole process group lets the API process drain its
queue through the child first.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from engine.config import StoreSettings
from engine.errors import IngestError, StoreError
from engine.ingest.writer_wire import (
    ERROR_KINDS,
    PROTOCOL,
    Wire,
    frame,
    item_from_wire,
    read_frame,
)
from engine.model.records import NewTriggerInstance
from engine.store import create_store
from engine.store.base import Store
from engine.store.codec import UnstorableValue
from engine.support.logs import configure_logging, register_secrets

log = logging.getLogger(__name__)


async def _serve(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    opening = await read_frame(reader)
    protocol = opening[1]
    if protocol != PROTOCOL:  # checked first: another version's frame has other fields
        writer.write(frame(("failed", f"protocol {protocol}, this child speaks {PROTOCOL}")))
        await writer.drain()
        writer.close()
        return
    _, _, store_settings, base_dir, log_level, log_format, secrets, max_form_fields = opening
    configure_logging(log_level, log_format)
    register_secrets(*secrets)
    try:
        store = create_store(StoreSettings(**store_settings), Path(base_dir))
        await store.open()
    except Exception as exc:
        writer.write(frame(("failed", f"{type(exc).__name__}: {exc}")))
        await writer.drain()
        writer.close()
        return
    writer.write(frame(("ready",)))
    batches: set[asyncio.Task[None]] = set()
    try:
        while True:
            try:
                seq, items = await read_frame(reader)
            except (OSError, asyncio.IncompleteReadError):
                break  # the API process closed the socket, or is gone
            task = asyncio.get_running_loop().create_task(
                _write(store, writer, seq, items, max_form_fields)
            )
            batches.add(task)
            task.add_done_callback(batches.discard)
    finally:
        if batches:
            await asyncio.wait(set(batches))
        await store.close()
        writer.close()


async def _write(
    store: Store, writer: asyncio.StreamWriter, seq: int, wires: list[Wire], max_form_fields: int
) -> None:
    try:
        reply = await _reply(store, seq, wires, max_form_fields)
    except Exception as exc:  # a bug must not take the writer down: the batch fails alone
        log.exception("ingest writer process: batch failed")
        reply = (seq, False, "StoreError", f"{type(exc).__name__}: {exc}", None)
    if not writer.is_closing():
        writer.write(frame(reply))


async def _reply(
    store: Store, seq: int, wires: list[Wire], max_form_fields: int
) -> tuple[Any, ...]:
    started = time.perf_counter()
    # A refused body is its own request's answer; the rest of the batch is written.
    results: list[tuple[Any, ...] | None] = [None] * len(wires)
    items: list[NewTriggerInstance] = []
    for index, wire in enumerate(wires):
        try:
            items.append(item_from_wire(wire, max_form_fields))
        except IngestError as exc:
            results[index] = (None, "IngestError", str(exc), exc.status)
        except UnstorableValue as exc:
            results[index] = (None, "UnstorableValue", str(exc), 400)
    try:
        answers = await store.add_trigger_instances(items) if items else []
    except StoreError as exc:
        kind = type(exc).__name__ if type(exc).__name__ in ERROR_KINDS else "StoreError"
        return (seq, False, kind, str(exc), getattr(exc, "retry_after", None))
    stored = iter(answers)
    for index, result in enumerate(results):
        if result is None:
            answer = next(stored)
            results[index] = (answer.id, answer.duplicate)
    return (seq, True, results, time.perf_counter() - started)


def main(argv: list[str]) -> None:
    # The API process decides when this process stops (by closing the socket), so that it
    # can drain its queue through it first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    faulthandler.enable()  # a SIGBUS (engine.http.server) leaves the stacks in the log
    asyncio.run(_serve(int(argv[0])))


if __name__ == "__main__":
    main(sys.argv[1:])
