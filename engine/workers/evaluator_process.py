"""One rule evaluator child process as its parent holds it: start, socket, watchdog.

The parent (engine.workers.evaluator.EvaluatorPool) sends a chunk of instances with
`EvaluatorProcess.evaluate` and gets a verdict per instance, or `ChildLost` when the
child ended first. The watchdog reads the progress page the child writes
(engine.workers.evaluator_wire) a few times a second and kills the child when one
instance holds it past the budget (`workers.rules_eval_timeout`), or when it holds a
chunk without evaluating any of it for much longer. `ChildLost.culprit` says where the
child was when it ended, so that the pool can blame that instance alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import mmap
import os
import pickle
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from typing import Any

from engine.config import Settings
from engine.errors import EvaluatorUnavailable
from engine.model.records import TriggerInstance
from engine.support.child_process import child_environment, python_module_command, reap
from engine.support.logs import scrubber
from engine.workers.evaluator_wire import (
    LENGTH,
    PAGE,
    PHASES,
    PROGRESS,
    PROTOCOL,
    REF_AT,
    REF_MAX,
    Verdict,
    frame,
    instance_to_wire,
    unframe,
    verdict_from_wire,
)

log = logging.getLogger(__name__)

# The module a child runs (tests find the children by it in /proc/*/cmdline).
CHILD_MODULE = "engine.workers.evaluator_child"
# How long a child may take to start (imports, rules) before it counts as not started.
OPEN_TIMEOUT = 60.0
# Seconds a child whose socket closed has to exit before it is killed.
_EXIT_WAIT = 5.0
# A child holding a chunk without evaluating any of it (reading it, building rules) for
# this long past the budget is stuck: killed, and the chunk evaluated again elsewhere.
_STUCK_MARGIN = 30.0


class Culprit:
    """Where a child was when it ended: the instance index in its chunk, rule and phase."""

    def __init__(self, index: int, rule: str | None, phase: str) -> None:
        self.index = index
        self.rule = rule
        self.phase = phase


class ChildLost(Exception):
    """A child ended before answering a chunk (`culprit`: where it was, if anywhere).

    Internal to the evaluator: EvaluatorPool.decide handles it, and what leaves the pool
    is a verdict or engine.errors.EvaluatorUnavailable."""

    def __init__(self, culprit: Culprit | None, timed_out: bool, how: str) -> None:
        super().__init__(how)
        self.culprit = culprit
        self.timed_out = timed_out
        self.how = how


class EvaluatorProcess:
    """One evaluator process: its socket, its progress page, its watchdog."""

    def __init__(self, process, reader, writer, page: mmap.mmap, budget: float) -> None:
        self.process = process
        self._reader: asyncio.StreamReader = reader
        self._writer: asyncio.StreamWriter = writer
        self._page = page
        self._budget = budget
        self._seq = itertools.count()
        self._call: tuple[int, asyncio.Future[Any]] | None = None
        self._rules_key: Any = None
        self._kv: Any = None
        self._timed_out = False
        self._stuck = False
        self.on_exit: Callable[[EvaluatorProcess], None] | None = None
        # Called when a chunk whose caller was cancelled is answered: the child is free.
        self.on_idle: Callable[[EvaluatorProcess], None] | None = None
        self._gone: ChildLost | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def closed(self) -> bool:
        """Whether its socket is closed (it ended, or is being stopped)."""
        return self._writer.is_closing()

    @classmethod
    async def spawn(cls, settings: Settings) -> EvaluatorProcess:
        ours, theirs = socket.socketpair()
        page_fd = _page_file()
        try:
            process = await asyncio.create_subprocess_exec(
                *python_module_command(CHILD_MODULE, str(theirs.fileno()), str(page_fd)),
                pass_fds=(theirs.fileno(), page_fd),
                stdin=asyncio.subprocess.DEVNULL,
                env=child_environment(),
                # Its own session: a Ctrl-C to the parent's group does not reach it.
                start_new_session=True,
            )
            page = mmap.mmap(page_fd, PAGE)
        except OSError as exc:
            ours.close()
            raise EvaluatorUnavailable(f"cannot start a rule evaluator process: {exc}") from exc
        except BaseException:  # cancelled while starting (the pool closing): no fd left open
            ours.close()
            raise
        finally:
            theirs.close()
            os.close(page_fd)
        try:
            reader, writer = await asyncio.open_unix_connection(sock=ours)
        except BaseException:
            ours.close()
            await asyncio.shield(reap(process))
            raise
        child = cls(process, reader, writer, page, settings.workers.rules_eval_timeout)
        opening = (
            "open",
            PROTOCOL,
            settings,
            settings.workers.rules_eval_memory_mb,
            scrubber.secrets(),
        )
        try:
            writer.write(frame(opening))
            answer = await asyncio.wait_for(_read_frame(reader), OPEN_TIMEOUT)
        except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError) as exc:
            await child._kill()
            raise EvaluatorUnavailable(
                f"the rule evaluator process did not start: {exc!r}"
            ) from exc
        except BaseException:  # cancelled: the child must not outlive the call
            await asyncio.shield(child._kill())
            raise
        if answer[0] != "ready":
            await child._kill()
            raise EvaluatorUnavailable(f"the rule evaluator process did not start: {answer[1]}")
        loop = asyncio.get_running_loop()
        child._tasks = [
            loop.create_task(child._listen(), name="rule evaluator replies"),
            loop.create_task(child._watch(), name="rule evaluator watchdog"),
        ]
        return child

    async def evaluate(
        self, instances: list[TriggerInstance], kv: Any, rules: tuple[Any, tuple[Any, ...]]
    ) -> list[Verdict]:
        """The verdicts on `instances`; `rules` is (their key, the rules message), sent
        first when this child has other rules. Raises ChildLost."""
        key, rules_message = rules
        if self._gone is not None:
            raise self._gone
        seq = next(self._seq)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._call = (seq, future)
        frames = []
        if self._rules_key is not key:
            frames.append(frame(rules_message))
            self._rules_key = key
        if self._kv is not kv:
            frames.append(frame(("kv", kv)))
            self._kv = kv
        frames.append(frame(("eval", seq, [instance_to_wire(i) for i in instances])))
        try:
            # A closed socket: the reply reader sees the same end and fails the future.
            with contextlib.suppress(OSError):
                self._writer.write(b"".join(frames))
                await self._writer.drain()
            # Shielded: a cancelled caller leaves the chunk to finish (or be killed).
            reply = await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(self._answered_late)
            raise
        finally:
            if future.done():
                self._call = None
        return [verdict_from_wire(wire) for wire in reply]

    def _answered_late(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            return  # the child ended: on_exit handles it
        self._call = None
        if self.on_idle is not None:
            self.on_idle(self)

    async def _watch(self) -> None:
        """Kill the child when one instance holds it past the budget (or when it holds a
        chunk without evaluating any of it for much longer)."""
        period = max(0.02, min(0.25, self._budget / 10))
        last: tuple[int, int] | None = None
        since = time.monotonic()
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            if self._call is None:
                last = None
                continue
            step, busy, _, seq, _, _ = PROGRESS.unpack_from(self._page, 0)
            if (step, seq) != last:
                last, since = (step, seq), now
                continue
            if busy and now - since > self._budget:
                self._timed_out = True
            elif not busy and now - since > self._budget + _STUCK_MARGIN:
                self._stuck = True
            else:
                continue
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            return

    async def _listen(self) -> None:
        how = "its socket closed"
        try:
            while True:
                try:
                    reply = await _read_frame(self._reader)
                except pickle.UnpicklingError as exc:
                    raise ValueError(str(exc)) from exc
                call = self._call
                if call is not None and call[0] == reply[0] and not call[1].done():
                    call[1].set_result(reply[1])
        except (OSError, EOFError, asyncio.IncompleteReadError, ValueError) as exc:
            how = type(exc).__name__
        finally:
            for task in self._tasks:
                if task is not asyncio.current_task():
                    task.cancel()
            self._writer.close()
        try:
            await asyncio.wait_for(asyncio.shield(self.process.wait()), _EXIT_WAIT)
        except TimeoutError:
            await reap(self.process)
        code = self.process.returncode
        if self._timed_out:
            how = f"killed after {self._budget:g} s on one instance"
        elif self._stuck:
            how = "killed: it held a chunk without evaluating it"
        elif code is not None and code < 0:
            how = f"killed by signal {signal.Signals(-code).name}"
        elif code is not None:
            how = f"exit code {code}"
        call = self._call
        self._call = None
        self._gone = ChildLost(None, False, how)
        if call is not None and not call[1].done():
            culprit = self._culprit(call[0])
            call[1].set_exception(ChildLost(culprit, self._timed_out, how))
            log.error(
                "the rule evaluator process ended (%s)%s; starting another",
                how,
                f" on instance {culprit.index} of its chunk" if culprit else "",
                extra={"pid": self.process.pid},
            )
        if self.on_exit is not None:
            self.on_exit(self)

    def _culprit(self, seq: int) -> Culprit | None:
        """Where the (dead) child was in chunk `seq`, from its progress page."""
        _, busy, phase, page_seq, index, length = PROGRESS.unpack_from(self._page, 0)
        if not busy or page_seq != seq & 0xFFFFFFFF:
            return None
        ref = bytes(self._page[REF_AT : REF_AT + min(length, REF_MAX)]).decode("utf-8", "replace")
        return Culprit(index, ref or None, PHASES.get(phase, ""))

    async def stop(self, grace: float) -> None:
        """Close the socket (the child exits at its next read); kill after `grace`."""
        self.on_exit = None
        self._writer.close()
        try:
            await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            await self._kill()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _kill(self) -> None:
        self._writer.close()
        await reap(self.process)


def _page_file() -> int:
    """A file descriptor of one shared, zeroed page (memory only, where possible)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("hookyard-evaluator-progress")
    else:  # pragma: no cover - not Linux
        with tempfile.TemporaryFile() as handle:
            fd = os.dup(handle.fileno())
    os.ftruncate(fd, PAGE)
    return fd


async def _read_frame(reader: asyncio.StreamReader) -> tuple[Any, ...]:
    (length,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
    return unframe(await reader.readexactly(length))
