"""Workflow steps run in child processes under a budget enforced from outside them.

A workflow's expressions are an author's, and they run over values a webhook sender
chose. The limits inside the expression engines (engine.workflows.yaql_engine, the
Jinja sandbox, engine.rules.regexes) catch what they know of; a C-level operation they
miss (sorting a million-item list built from a payload, a huge allocation) cannot be
interrupted from inside the thread that runs it, and would stall or bloat the process
that serves HTTP. So, as rule evaluation does (engine.workers.evaluator), every step
runs in a `StepProcess`:

- the parent sends the job (engine.workers.step_jobs) and waits for the answer at most
  `workers.workflow_step_timeout` seconds; past it the child is killed (SIGKILL) and the
  step fails with `WorkflowStepFailed`, naming the task and expression the child last
  reported (its progress page) and the budget;
- the child runs under an address-space limit (`workers.workflow_step_memory_mb`): an
  allocation past it fails the step the same way, and the child is replaced;
- a child that dies otherwise (the OOM killer, kill -9) may not be the step's doing:
  the step is tried once more on a new child, and fails if that one dies too.

The store stays in the parent: the state is unsealed before the job is sent and sealed
and written after, in the same one transaction as before. Children start on first use
(a process that steps no workflow starts none); a lost child is replaced at the next
step. What a child already holds (the actions' parameter kinds, the st2kv snapshot, a
workflow's spec) is sent again only when the parent's object changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import mmap
import os
import signal
import socket
from collections.abc import Mapping
from typing import Any

from engine.config import Settings
from engine.errors import WorkflowStepFailed, WorkflowStepUnavailable
from engine.rules.kvlookup import KvSnapshot
from engine.support.child_process import child_environment, python_module_command, reap
from engine.support.logs import scrubber
from engine.workers.evaluator_wire import LENGTH, frame, unframe
from engine.workers.step_child import PROGRESS_PAGE, PROTOCOL, where_from_page
from engine.workers.step_jobs import StepJob, StepOutcome

log = logging.getLogger(__name__)

# The module a child runs (tests find the children by it in /proc/*/cmdline).
CHILD_MODULE = "engine.workers.step_child"
# How long a child may take to start before it counts as not started.
OPEN_TIMEOUT = 60.0


class _ChildDied(WorkflowStepFailed):
    """The child ended without an answer, neither past its budget nor out of memory."""


class StepProcess:
    """One step child: its socket, its progress page, what it already holds."""

    def __init__(self, process: Any, reader: Any, writer: Any, page: mmap.mmap) -> None:
        self.process = process
        self._reader: asyncio.StreamReader = reader
        self._writer: asyncio.StreamWriter = writer
        self._page = page
        self._seq = 0
        self._last_frame = 0
        self._kinds: Any = None
        self._kv: Any = None
        self._specs: dict[str, Any] = {}
        self.lost = False

    @classmethod
    async def spawn(cls, settings: Settings) -> StepProcess:
        ours, theirs = socket.socketpair()
        page_fd = os.memfd_create("hookyard-step-progress")
        try:
            os.ftruncate(page_fd, PROGRESS_PAGE)
            process = await asyncio.create_subprocess_exec(
                *python_module_command(CHILD_MODULE, str(theirs.fileno()), str(page_fd)),
                pass_fds=(theirs.fileno(), page_fd),
                stdin=asyncio.subprocess.DEVNULL,
                env=child_environment(),
                start_new_session=True,  # a Ctrl-C to the parent's group does not reach it
            )
            page = mmap.mmap(page_fd, PROGRESS_PAGE)
        except OSError as exc:
            ours.close()
            raise WorkflowStepUnavailable(f"cannot start a workflow step process: {exc}") from exc
        except BaseException:
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
        child = cls(process, reader, writer, page)
        workers = settings.workers
        opening = ("open", PROTOCOL, settings, workers.workflow_step_memory_mb, scrubber.secrets())
        try:
            writer.write(frame(opening))
            answer = await asyncio.wait_for(_read_frame(reader), OPEN_TIMEOUT)
        except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError) as exc:
            await child.kill()
            raise WorkflowStepUnavailable(
                f"the workflow step process did not start: {exc!r}"
            ) from exc
        except BaseException:
            await asyncio.shield(child.kill())
            raise
        if answer[0] != "ready":
            await child.kill()
            raise WorkflowStepUnavailable(f"the workflow step process did not start: {answer[1]}")
        return child

    async def run(
        self,
        job: StepJob,
        spec: Any,
        kv: KvSnapshot | None,
        kinds: Mapping[str, Mapping[str, str]],
        budget: float,
    ) -> StepOutcome:
        """The child's answer to `job`; WorkflowStepFailed when it ran out of its budget
        or died (the child is then lost: killed, never used again)."""
        self._seq += 1
        seq = self._seq
        frames = []
        if self._kinds is not kinds:
            frames.append(frame(("kinds", kinds)))
        if self._kv is not kv:
            frames.append(frame(("kv", kv)))
        if self._specs.get(job.action) is not spec:
            frames.append(frame(("spec", job.action, spec)))
        frames.append(frame(("step", seq, job)))
        try:
            self._writer.write(b"".join(frames))
            self._kinds, self._kv, self._specs[job.action] = kinds, kv, spec
            await self._writer.drain()
            reply = await asyncio.wait_for(self._read_reply(), budget)
        except TimeoutError:
            where = self._where()
            await self.kill()
            raise WorkflowStepFailed(
                f"the workflow step exceeded its budget of {budget:g} s "
                f"(workers.workflow_step_timeout){where}; its process was killed"
            ) from None
        except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
            where = self._where()
            await self.kill()
            raise _ChildDied(f"the workflow step process ended ({self._how(exc)}){where}") from None
        except BaseException:  # cancelled: what the child holds is not known any more
            await asyncio.shield(self.kill())
            raise
        answer_seq, status, answer = reply
        if answer_seq != seq:  # cannot happen with one call at a time; never trust it
            await self.kill()
            raise WorkflowStepFailed("the workflow step process answered another step")
        if status == "ok":
            return dataclasses.replace(answer, wire_bytes=self._last_frame)
        if status == "memory":
            await self.kill()  # it exits by itself; what it held is not trusted
        raise WorkflowStepFailed(answer)

    async def _read_reply(self) -> tuple[Any, ...]:
        (length,) = LENGTH.unpack(await self._reader.readexactly(LENGTH.size))
        self._last_frame = length
        return unframe(await self._reader.readexactly(length))

    def _where(self) -> str:
        where = where_from_page(self._page)
        return f" evaluating {where}" if where else ""

    def _how(self, exc: BaseException) -> str:
        code = self.process.returncode
        if code is not None and code < 0:
            return f"killed by signal {signal.Signals(-code).name}"
        if code is not None:
            return f"exit code {code}"
        return type(exc).__name__

    async def kill(self) -> None:
        self.lost = True
        self._writer.close()
        await reap(self.process)

    async def stop(self, grace: float) -> None:
        """Close the socket (the child exits at its next read); kill after `grace`."""
        self.lost = True
        self._writer.close()
        try:
            await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            await reap(self.process)


class StepPool:
    """The step children of one process (started on first use, replaced when lost)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._size = settings.workers.workflow_step_processes
        self._budget = settings.workers.workflow_step_timeout
        self._idle: list[StepProcess] = []
        self._busy: set[StepProcess] = set()
        self._count = 0  # children alive or starting
        self._freed = asyncio.Condition()
        self._closing = False
        self._kinds_key: Any = None
        self._kinds: dict[str, dict[str, str]] = {}
        self._warming: set[asyncio.Task[None]] = set()
        # Children started to replace lost ones (tests read it).
        self.restarts = 0

    @property
    def pids(self) -> list[int]:
        """The children waiting for a step."""
        return [child.process.pid for child in self._idle]

    @property
    def busy_pids(self) -> list[int]:
        """The children running a step now."""
        return [child.process.pid for child in self._busy]

    async def start(self) -> None:
        """Start the children now (a role that will step workflows: the first workflow
        then does not wait for a child to start); one that does not start is logged and
        started again at the next step."""
        while self._count < self._size:
            self._count += 1
            task = asyncio.get_running_loop().create_task(self._spawn_idle())
            self._warming.add(task)
            task.add_done_callback(self._warming.discard)
        await asyncio.gather(*self._warming, return_exceptions=True)

    async def _spawn_idle(self) -> None:
        try:
            child = await StepProcess.spawn(self._settings)
        except WorkflowStepUnavailable as exc:
            log.error("%s (another is started at the next step)", exc)
            child = None
        except BaseException:
            child = None
            raise
        finally:
            async with self._freed:
                if child is None or self._closing:
                    self._count -= 1
                else:
                    self._idle.append(child)
                self._freed.notify()
        if child is not None and self._closing:
            await child.stop(0)

    def kinds_for(self, packs: Any, build: Any) -> dict[str, dict[str, str]]:
        """The actions' parameter kinds, built again only when the pack set changed."""
        if self._kinds_key is not packs:
            self._kinds_key, self._kinds = packs, build()
        return self._kinds

    async def run(
        self,
        job: StepJob,
        spec: Any,
        kv: KvSnapshot | None,
        kinds: Mapping[str, Mapping[str, str]],
    ) -> StepOutcome:
        for attempt in (1, 2):
            child = await self._acquire()
            self._busy.add(child)
            try:
                return await child.run(job, spec, kv, kinds, self._budget)
            except _ChildDied as exc:
                if attempt == 2:
                    raise WorkflowStepFailed(f"{exc}, twice: the step is not tried again") from None
                log.warning("%s; the step is tried once more on a new process", exc)
            finally:
                self._busy.discard(child)
                await self._release(child)
        raise AssertionError("unreachable")

    async def _acquire(self) -> StepProcess:
        async with self._freed:
            while True:
                if self._closing:
                    raise WorkflowStepUnavailable("the workflow step processes are closing")
                if self._idle:
                    return self._idle.pop()
                if self._count < self._size:
                    self._count += 1
                    break
                await self._freed.wait()
        try:
            return await StepProcess.spawn(self._settings)
        except BaseException:
            async with self._freed:
                self._count -= 1
                self._freed.notify()
            raise

    async def _release(self, child: StepProcess) -> None:
        async with self._freed:
            if child.lost or self._closing:
                self._count -= 1
                self.restarts += 1 if child.lost and not self._closing else 0
                if not child.lost:
                    await child.stop(0)
            else:
                self._idle.append(child)
            self._freed.notify()

    async def close(self) -> None:
        self._closing = True
        for task in list(self._warming):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        idle, self._idle = self._idle, []
        grace = self._settings.server.shutdown_grace
        await asyncio.gather(*(child.stop(grace) for child in idle))
        async with self._freed:
            self._freed.notify_all()


async def _read_frame(reader: asyncio.StreamReader) -> tuple[Any, ...]:
    (length,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
    return unframe(await reader.readexactly(length))


def pool_of(runtime: Any) -> StepPool:
    """The runtime's step pool, made on first use (the actions and workflows roles share
    it; engine.workers.lifecycle closes it)."""
    pool = runtime.workflow_steps
    if pool is None:
        pool = runtime.workflow_steps = StepPool(runtime.settings)
    return pool


async def close_pool_of(runtime: Any) -> None:
    pool = runtime.workflow_steps
    if pool is not None:
        runtime.workflow_steps = None
        with contextlib.suppress(Exception):
            await pool.close()
