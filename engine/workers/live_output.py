"""A running action's output, stored while it runs: the event stream's
`st2.execution.output__create` events and `GET /api/v1/executions/<id>/output`.

The runner tells `write` each piece its process writes (engine.runners.process); pieces
are gathered for FLUSH_SECONDS and stored in one transaction, secrets masked, so a chatty
action costs a few writes a second, not one per line. What waits unwritten is bounded
(MAX_PENDING_CHARS; the runner already caps each pipe at workers.max_output): past it,
text is dropped from the live copy and a marker says so — the execution's result keeps
the output as the runner captured it either way. A store that fails costs the live copy,
never the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from engine.errors import StoreError
from engine.model.records import utcnow
from engine.model.stream import OutputChunk
from engine.runners.base import mask_secrets
from engine.store.base import Store

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.1
MAX_PENDING_CHARS = 1_048_576
DROPPED_MARKER = "\n[hookyard: live output dropped here: the store fell behind]\n"


class LiveOutput:
    def __init__(
        self,
        store: Store,
        execution_id: str,
        action_ref: str,
        runner_ref: str,
        secrets: list[str],
        extra: dict[str, Any],
    ) -> None:
        self._store = store
        self._execution_id = execution_id
        self._action_ref = action_ref
        self._runner_ref = runner_ref
        self._secrets = secrets
        self._extra = extra
        self._pending: list[OutputChunk] = []
        self._pending_chars = 0
        self._dropping = False
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task | None = None

    def write(self, output_type: str, text: str) -> None:
        if self._task is None and not self._closing.is_set():
            # Started by the first output: an action that prints nothing costs no task.
            self._task = asyncio.create_task(
                self._flush_loop(), name=f"output {self._execution_id}"
            )
        if self._pending_chars + len(text) > MAX_PENDING_CHARS:
            if not self._dropping:
                self._dropping = True
                self._pending.append(OutputChunk(output_type, DROPPED_MARKER, utcnow()))
            return
        self._dropping = False
        last = self._pending[-1] if self._pending else None
        if last is not None and last.output_type == output_type:
            # One chunk per run of the same pipe: fewer rows, same text.
            self._pending[-1] = OutputChunk(output_type, last.data + text, last.timestamp)
        else:
            self._pending.append(OutputChunk(output_type, text, utcnow()))
        self._pending_chars += len(text)
        self._ready.set()

    async def close(self) -> None:
        """Store what is left (before the execution's end is recorded, so that a client
        following the stream sees all output before the final status). A store write in
        progress is waited for, not cancelled."""
        self._closing.set()
        self._ready.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self._flush()

    async def _flush_loop(self) -> None:
        while not self._closing.is_set():
            await self._ready.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), FLUSH_SECONDS)
            await self._flush()

    async def _flush(self) -> None:
        self._ready.clear()
        chunks, self._pending, self._pending_chars = self._pending, [], 0
        if not chunks:
            return
        if self._secrets:
            chunks = [
                OutputChunk(c.output_type, mask_secrets(c.data, self._secrets), c.timestamp)
                for c in chunks
            ]
        try:
            await self._store.append_output(
                self._execution_id, self._action_ref, self._runner_ref, chunks
            )
        except StoreError as exc:
            log.warning(
                "storing live output of %s failed: %s", self._execution_id, exc, extra=self._extra
            )
