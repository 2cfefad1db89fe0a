"""The ingest writer process: webhooks stored by a child process, beside the HTTP loop.

A Python process runs its Python code on one core at a time. Storing a webhook cost the
API process nearly as much again as receiving it (building the payload JSON, then the
SQLite B-tree inserts and WAL writes, or asyncpg's encoding), so one process accepted
about half of what it could answer. With `ingest.writer_process` on (the default), the
API process sends each group commit to one child process instead: the webhooks' ids,
times, header lines and bodies as received, which are cheap to send. The child parses
the bodies (a body it refuses is that request's 400 or 415, and the rest of the batch is
written), builds the payloads (engine.model.hook_payload), writes the batch atomically
with the store's own `add_trigger_instances`, and answers; the API process answers 202
only then, so a 202 still means committed. The API process still parses a body it needs
itself: an API key in the body, a custom response, the generic st2 hook.

What crosses the socket is in engine.ingest.writer_wire; the child is
engine.ingest.writer_child.

If the child dies, each batch it held is answered StoreUnavailable (a 503 and a retry):
such a batch may have been committed, as with any crash between a commit and its answer,
and a dedupe key makes the retry harmless. A new child is started after a pause. The
child exits when its socket closes (the API process stopped, even by SIGKILL) after
finishing the batches in hand; it ignores SIGINT and SIGTERM, so a signal sent to the
whole process group lets the API process drain its queue through the child first.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from engine.config import Settings
from engine.errors import EngineError, StoreBusy, StoreError, StoreUnavailable
from engine.ingest.writer_wire import (
    ERROR_KINDS,
    PROTOCOL,
    Wire,
    answer_from_wire,
    frame,
    item_to_wire,
    read_frame,
)
from engine.model.records import Accepted, NewTriggerInstance
from engine.store.base import Store
from engine.store.batching import GroupCommitter
from engine.store.codec import UnstorableValue
from engine.support.child_process import child_environment as _child_environment
from engine.support.child_process import python_module_command
from engine.support.child_process import reap as _reap
from engine.support.logs import scrubber

log = logging.getLogger(__name__)

# The module the child runs (tests find the children by it in /proc/*/cmdline).
CHILD_MODULE = "engine.ingest.writer_child"
# What a child is sent to speak (a test plays another version by replacing it here).
_PROTOCOL = PROTOCOL
# How long the child may take to open the store (PostgreSQL connects and migrates).
_OPEN_TIMEOUT = 60.0
# Seconds beyond twice the store's busy_timeout after which a child that has not
# answered a batch is taken to be stuck, and replaced.
_REPLY_MARGIN = 30.0
# Pause before a new child after one died, doubled after each child that did not start,
# so a child that cannot run is not respawned for every batch.
_RESTART_PAUSE = 0.5
_RESTART_PAUSE_MAX = 30.0
# Seconds a child that closed its socket has to exit before it is killed.
_EXIT_WAIT = 5.0
# Webhooks per batch sent to the child. A batch's senders wait for its commit, and with
# a bounded number of connections big batches left the API process idle, all of them
# waiting; small batches in flight keep its loop busy with the others' requests (same
# run, 64 connections: 16 or 32 per batch ~11,000/s, 64 ~8,000/s, unbounded ~9,000/s).
_BATCH_MAX = 16
# The child only writes trigger instances: a small general pool is enough.
_CHILD_POOL_SIZE = 2


class IngestProcess:
    """The API process's side: group commits of webhooks, written by the child."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self._settings = settings
        # The API process's own store: told of what the child stored (backlog, wake-up
        # of the rules worker, commit metrics).
        self._store = store
        self._committer: GroupCommitter[Wire, Accepted] = GroupCommitter(
            self._write_batch,
            batch_max=min(settings.store.batch_max, _BATCH_MAX),
            timeout=settings.store.busy_timeout,
            name="ingest writer process",
            # At least two batches with the child: the next one is on its way while the
            # child writes, so neither process waits for the other's wake-up (PostgreSQL
            # writes several at once anyway, one per ingest connection).
            concurrency=max(2, store.ingest_concurrency),
        )
        self._child: _Child | None = None
        self._restart: asyncio.Task[None] | None = None
        self._closing = False
        # Children started after the first (tests read it).
        self.restarts = 0
        # Why the child's latest batch failed (not busy), until one is written.
        self._write_failure: str | None = None

    @property
    def pid(self) -> int | None:
        return None if self._child is None else self._child.process.pid

    async def start(self) -> None:
        self._child = await _Child.spawn(self._settings, self._on_exit)
        self._committer.start()

    async def add_trigger_instance(self, item: NewTriggerInstance) -> Accepted:
        answer = await self._committer.enqueue(item_to_wire(item))
        if isinstance(answer, EngineError):  # its body, parsed by the child, was refused
            raise answer
        return answer

    def problem(self) -> str | None:
        """Why webhooks cannot be stored now (for /ready), or None."""
        if self._child is None and not self._closing:
            return "the ingest writer process is not running (restarting)"
        if self._write_failure is not None:
            return "the ingest writer process cannot write to the store"
        return None

    async def close(self) -> None:
        """Write what is queued, then let the child finish and exit."""
        self._closing = True
        await self._committer.close()
        if self._restart is not None:
            self._restart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restart
        child, self._child = self._child, None
        if child is not None:
            await child.stop(self._settings.server.shutdown_grace)

    async def _write_batch(self, items: Sequence[Wire]) -> list[Accepted]:
        child = self._child
        if child is None:
            raise StoreUnavailable("the ingest writer process is restarting")
        reply = await child.call(list(items))
        if not reply[1]:
            _, _, kind, message, retry_after = reply
            error_type = ERROR_KINDS.get(kind, StoreError)
            if error_type is StoreBusy:
                raise StoreBusy(message, retry_after=retry_after or 1.0)
            if error_type is not UnstorableValue:
                self._write_failure = message
            raise error_type(message)
        self._write_failure = None
        _, _, results, seconds = reply
        answers = [answer_from_wire(result) for result in results]
        self._store.count_ingested(
            sum(1 for answer in answers if isinstance(answer, Accepted) and not answer.duplicate)
        )
        stored = sum(1 for answer in answers if isinstance(answer, Accepted))
        self._store.observe_commit(stored, seconds)
        return answers

    def _on_exit(self, child: _Child) -> None:
        if self._child is not child:
            return
        self._child = None
        if not self._closing:
            log.error(
                "the ingest writer process exited; starting another",
                extra={"pid": child.process.pid, "returncode": child.process.returncode},
            )
            self._restart = asyncio.get_running_loop().create_task(self._respawn())

    async def _respawn(self) -> None:
        pause = _RESTART_PAUSE
        while not self._closing:
            await asyncio.sleep(pause)
            try:
                child = await _Child.spawn(self._settings, self._on_exit)
            except Exception as exc:  # no file descriptors, the database down...: try again
                log.error("the ingest writer process did not start: %s", exc)
                pause = min(pause * 2 or _RESTART_PAUSE, _RESTART_PAUSE_MAX)
                continue
            if self._closing:
                await child.stop(self._settings.server.shutdown_grace)
                return
            self._child = child
            self.restarts += 1
            return


class _Child:
    """One running writer process and the batches it holds, by sequence number."""

    def __init__(
        self, process: asyncio.subprocess.Process, reader, writer, on_exit, reply_timeout: float
    ) -> None:
        self.process = process
        self._reply_timeout = reply_timeout
        self._reader: asyncio.StreamReader = reader
        self._writer: asyncio.StreamWriter = writer
        self._on_exit = on_exit
        self._pending: dict[int, asyncio.Future[tuple[Any, ...]]] = {}
        # When each pending batch was sent (for _watch).
        self._sent_at: dict[int, float] = {}
        self._stuck = False
        self._watching: asyncio.Task[None] | None = None
        self._seq = itertools.count()
        self._gone: StoreUnavailable | None = None
        self._listening: asyncio.Task[None] | None = None

    @classmethod
    async def spawn(cls, settings: Settings, on_exit) -> _Child:
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                *_child_command(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                env=_child_environment(),
                # Its own session: a signal to the API process's group (Ctrl-C, a hangup)
                # does not reach it. It stops when the API process closes the socket.
                start_new_session=True,
            )
        except BaseException as exc:
            ours.close()
            if isinstance(exc, OSError):
                raise StoreUnavailable(f"cannot start the ingest writer process: {exc}") from exc
            raise
        finally:
            theirs.close()
        try:
            reader, writer = await asyncio.open_unix_connection(sock=ours)
        except BaseException:
            ours.close()
            await asyncio.shield(_reap(process))
            raise
        # A batch waits for the database at most busy_timeout; much longer, the child is
        # stuck.
        reply_timeout = 2 * settings.store.busy_timeout + _REPLY_MARGIN
        child = cls(process, reader, writer, on_exit, reply_timeout)
        store = asdict(settings.store)
        store["pool_size"] = min(store["pool_size"], _CHILD_POOL_SIZE)
        opening = (
            "open",
            _PROTOCOL,
            store,
            str(settings.resolve_path(".")),
            settings.logging.level,
            settings.logging.format,
            scrubber.secrets(),
            settings.ingest.max_form_fields,
        )
        try:
            writer.write(frame(opening))
            answer = await asyncio.wait_for(read_frame(reader), _OPEN_TIMEOUT)
        except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError) as exc:
            await child._kill()
            raise StoreUnavailable(f"the ingest writer process did not start: {exc!r}") from exc
        except BaseException:  # cancelled (the app closing): the child must not outlive it
            await asyncio.shield(child._kill())
            raise
        if answer[0] != "ready":
            await child._kill()
            raise StoreUnavailable(
                f"the ingest writer process could not open the store: {answer[1]}"
            )
        loop = asyncio.get_running_loop()
        child._listening = loop.create_task(child._listen(), name="ingest writer replies")
        child._watching = loop.create_task(child._watch(), name="ingest writer watchdog")
        return child

    async def call(self, items: list[Wire]) -> tuple[Any, ...]:
        if self._gone is not None:
            raise self._gone
        seq = next(self._seq)
        future: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()
        self._pending[seq] = future
        # Stamped before writing: a child that stops reading blocks drain(), and the
        # watchdog must see that batch too.
        self._sent_at[seq] = time.monotonic()
        try:
            self._writer.write(frame((seq, items)))
            await self._writer.drain()
        except OSError:
            pass  # the reply reader sees the same end and fails the future
        try:
            return await future
        finally:
            self._pending.pop(seq, None)
            self._sent_at.pop(seq, None)

    async def _watch(self) -> None:
        """Kill a child that holds a batch longer than the reply timeout: the store gives
        up on a lock well before, so the child is stuck. Its batches are then answered as
        unavailable (see _listen) and a new child replaces it. One task, rather than a
        timer per batch, which cost the API process a few percent of its time."""
        period = max(0.05, min(1.0, self._reply_timeout / 4))
        while True:
            await asyncio.sleep(period)
            oldest = min(self._sent_at.values(), default=None)
            if oldest is not None and time.monotonic() - oldest > self._reply_timeout:
                log.error(
                    "the ingest writer process did not answer in %.0fs; killing it",
                    self._reply_timeout,
                    extra={"pid": self.process.pid},
                )
                self._stuck = True
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                return

    async def _listen(self) -> None:
        reason = "no reason"
        try:
            while True:
                reply = await read_frame(self._reader)
                future = self._pending.get(reply[0])
                if future is not None and not future.done():
                    future.set_result(reply)
        except (OSError, EOFError, asyncio.IncompleteReadError, ValueError) as exc:
            reason = type(exc).__name__
        finally:
            # Whatever ended the replies, every batch still held is answered and the child
            # replaced: no request waits for an answer that cannot come.
            if self._watching is not None:
                self._watching.cancel()
            self._writer.close()
            if self._stuck:
                reason = f"killed after no answer in {self._reply_timeout:.0f}s"
            self._gone = StoreUnavailable(
                f"the ingest writer process ended ({reason});"
                " the batches it held may or may not be stored"
            )
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(self._gone)
            self._on_exit(self)
        # It closed its socket, so it is finishing: given a moment to exit by itself.
        try:
            await asyncio.wait_for(asyncio.shield(self.process.wait()), _EXIT_WAIT)
        except TimeoutError:
            await _reap(self.process)

    async def stop(self, grace: float) -> None:
        """Close the socket (the child finishes its batches and exits); kill after `grace`."""
        self._writer.close()
        try:
            await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            log.error("the ingest writer process did not stop in %.0fs; killing it", grace)
            await self._kill()
        if self._listening is not None:
            with contextlib.suppress(Exception):
                await self._listening

    async def _kill(self) -> None:
        self._writer.close()
        await _reap(self.process)


def _child_command(fd: int) -> list[str]:
    return python_module_command(CHILD_MODULE, str(fd))
