"""Running one child process for a runner: own process group, capped output, hard timeout.

The child is started in a new session so that a timeout (or a cancelled run) can kill
everything it started — ``sh -c 'sleep 100 & sleep 100'`` leaves a grandchild that killing
the shell alone would orphan. Output is read while the child runs; past ``max_output`` bytes
it is still drained (so the child never blocks on a full pipe) but dropped, and marked.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from engine.errors import RunnerError
from engine.runners.base import OutputSink, ProcessWatch
from engine.runners.spawner import SpawnedProcess, spawn

log = logging.getLogger(__name__)

# Seconds between SIGTERM and SIGKILL of a timed-out process group.
KILL_GRACE_SECONDS = 1.0
# After the kill, how long to wait for pipes held by a process that escaped the group.
_DRAIN_AFTER_KILL_SECONDS = 1.0
# How often a kill path looks whether the leader has exited.
_EXIT_POLL_SECONDS = 0.005
_READ_CHUNK = 65536
# The python-script reply is the action's result, kept whole up to this size.
MAX_RESULT_CHANNEL_BYTES = 64 * 1024 * 1024
# Environment variables of the engine passed on to actions; everything else (database
# URLs, encryption keys, HOOKYARD_* settings) stays in the engine.
# With a process watch, a command without input starts behind this gate: a shell that runs
# it only once the worker has told the watch (and so the group guard) about the group, by
# writing a line to its stdin. A worker killed before that closes the pipe and the gate
# exits: no action process ever runs unwatched. (python-script is gated by its request on
# stdin: engine.runners.python_host reads it before it loads the action.)
_GATE = 'read -r go || exit 125; exec "$@" </dev/null'
_GATE_NAME = "hookyard-gate"
# The host variables an action or a sensor child inherits: nothing that could carry a
# secret of the engine (store URL, keys, webhook secrets) reaches code from a pack.
INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class ProcessOutcome:
    exit_code: int | None  # None when killed after a timeout before it could be reaped
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    timed_out: bool
    # Bytes the child wrote to its result descriptor (python-script), else b"".
    result_channel: bytes = b""
    result_channel_overflow: bool = False


def action_environment(
    execution_id: str, extra: Mapping[str, object] | None, host_env: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """A minimal environment for an action: safe host variables, then ``extra`` over them."""
    env = {name: host_env[name] for name in INHERITED_ENV if name in host_env}
    env.setdefault("PATH", DEFAULT_PATH)
    # StackStorm exposes the execution id to actions under this name.
    env["ST2_ACTION_EXECUTION_ID"] = execution_id
    for name, value in (extra or {}).items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise RunnerError(f"runner parameter 'env': invalid variable name {name!r}")
        text = "" if value is None else str(value)
        if "\0" in text:
            raise RunnerError(f"runner parameter 'env': variable {name!r} contains a NUL byte")
        env[name] = text
    return env


class _CappedReader:
    def __init__(
        self, stream: asyncio.StreamReader, limit: int, live: Callable[[str], None] | None = None
    ) -> None:
        self.stream = stream
        self._limit = max(0, limit)
        self.data = bytearray()
        self.truncated = False
        # Told each piece of the kept output as it is read (the event stream's live
        # output); a multi-byte character split across reads is held back whole.
        self._live = live
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    async def drain(self) -> None:
        while chunk := await self.stream.read(_READ_CHUNK):
            room = self._limit - len(self.data)
            if room > 0:
                self.data += chunk[:room]
                self._tell(chunk[:room])
            if len(chunk) > room:
                self.truncated = True
        self._tell(b"", final=True)

    def _tell(self, kept: bytes, final: bool = False) -> None:
        if self._live is None:
            return
        text = self._decoder.decode(kept, final)
        if text:
            try:
                self._live(text)
            except Exception:  # the live copy is a courtesy: never fail the run for it
                log.exception("passing live output on failed")
                self._live = None

    def text(self) -> str:
        return bytes(self.data).decode("utf-8", errors="replace")


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # the whole group is already gone


async def _feed_stdin(stream: asyncio.StreamWriter | None, data: bytes | None) -> None:
    if stream is None:
        return
    try:
        if data:
            stream.write(data)
            await stream.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the child exited without reading its input; its exit code tells the story
    finally:
        stream.close()


async def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float,
    max_output: int,
    cwd: str | None = None,
    stdin_data: bytes | None = None,
    with_result_channel: bool = False,
    watch: ProcessWatch | None = None,
    on_output: OutputSink | None = None,
    child_fds: Sequence[int] = (),
) -> ProcessOutcome:
    """Run ``argv`` (never through a shell unless argv says so) and collect what it did.

    With ``with_result_channel`` the child gets an extra pipe whose write end number is
    appended to argv; whatever it writes there comes back as ``result_channel``.
    ``watch`` is told the process group once it runs, and when it has been dealt with.
    ``on_output(output_type, text)`` is told the kept output of each pipe as it is read.
    ``child_fds`` are passed to the child and closed here once it has started (or failed to).
    Raises RunnerError when the process cannot be started at all.
    """
    argv = list(argv)
    if watch is not None and stdin_data is None:
        _check_executable(argv[0], env, cwd)  # the gate would only report exit code 127
        argv = ["/bin/sh", "-c", _GATE, _GATE_NAME, *argv]
        stdin_data = b"go\n"
    result_read_fd = result_write_fd = -1
    if with_result_channel:
        result_read_fd, result_write_fd = os.pipe()
        argv.append(str(result_write_fd))
    try:
        proc = await _start(
            argv,
            stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
            cwd=cwd,
            env=dict(env),
            pass_fds=((result_write_fd,) if with_result_channel else ()) + tuple(child_fds),
        )
    except BaseException as exc:  # cancelled while starting too: the read end is ours
        if with_result_channel:
            os.close(result_read_fd)
        if isinstance(exc, OSError):
            raise RunnerError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
        raise
    finally:
        if with_result_channel:
            # Only the child may hold the write end, so EOF comes when the child is gone.
            os.close(result_write_fd)
        for fd in child_fds:
            os.close(fd)
    _tell(watch, "started", proc.pid, timeout)

    assert proc.stdout is not None and proc.stderr is not None
    stdout = _CappedReader(proc.stdout, max_output, _live(on_output, "stdout"))
    stderr = _CappedReader(proc.stderr, max_output, _live(on_output, "stderr"))
    channel = _CappedReader(asyncio.StreamReader(), MAX_RESULT_CHANNEL_BYTES)
    channel_pipe = os.fdopen(result_read_fd, "rb", buffering=0) if with_result_channel else None
    tasks = [
        asyncio.ensure_future(proc.wait()),
        asyncio.ensure_future(stdout.drain()),
        asyncio.ensure_future(stderr.drain()),
        asyncio.ensure_future(_feed_stdin(proc.stdin, stdin_data)),
    ]
    if channel_pipe is not None:
        tasks.append(asyncio.ensure_future(_read_pipe(channel_pipe, channel)))

    timed_out = False
    try:
        # Done means: the child exited and every pipe reached end of file. asyncio.wait
        # cancels nothing on timeout, so the readers keep the output read so far and
        # collect what is still buffered while the group is being killed.
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        if pending:
            timed_out = True
            await _kill_group(proc)
            await _finish_readers(tasks)
    finally:
        try:
            if proc.returncode is None:
                # Cancelled while running (worker shutdown), or a leader that outlived its
                # SIGKILL's grace: leave nothing behind.
                await _kill_and_reap(proc)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            if channel_pipe is not None:
                channel_pipe.close()
            _close_pipes(proc)
            _tell(watch, "ended", proc.pid)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise RunnerError(f"reading from {argv[0]!r} failed: {task.exception()}")

    return ProcessOutcome(
        exit_code=proc.returncode,
        stdout=stdout.text(),
        stderr=stderr.text(),
        stdout_truncated=stdout.truncated,
        stderr_truncated=stderr.truncated,
        timed_out=timed_out,
        result_channel=bytes(channel.data),
        result_channel_overflow=channel.truncated,
    )


def _live(sink: OutputSink | None, output_type: str) -> Callable[[str], None] | None:
    if sink is None:
        return None
    return lambda text: sink(output_type, text)


def _check_executable(program: str, env: Mapping[str, str], cwd: str | None) -> None:
    # What exec would find, looked up as subprocess does: the action's PATH, its cwd.
    if "/" in program:
        found: str | None = os.path.join(cwd or "", program)
    else:
        found = shutil.which(program, path=env.get("PATH"))
    if found is None or not os.path.isfile(found) or not os.access(found, os.X_OK):
        raise RunnerError(f"cannot start {program!r}: not found or not executable")


def _tell(watch: ProcessWatch | None, event: str, *args: object) -> None:
    # The watch only adds a safety net; a failure in it must not fail or leak the run.
    if watch is None:
        return
    try:
        getattr(watch, event)(*args)
    except Exception:
        log.exception("process watch failed on %s of group %s", event, args[0])


async def _start(argv: list[str], **options: Any) -> SpawnedProcess:
    # Started off the event loop (engine.runners.spawner), in a session of its own. The
    # child runs (and may start others) before the start returns, while its pipes are
    # being connected; a cancellation landing there would kill the leader alone and orphan
    # the rest of the group. So the start is never cancelled — however many cancellations
    # arrive while it finishes — and a cancelled start then kills the group it started.
    starting = asyncio.ensure_future(spawn(argv, **options))
    try:
        return await asyncio.shield(starting)
    except asyncio.CancelledError:
        await _wait_out(starting)
        if not starting.cancelled() and starting.exception() is None:
            proc = starting.result()
            try:
                await _kill_and_reap(proc)
            finally:
                _close_pipes(proc)
        raise  # the first cancellation, now that nothing is left running


async def _kill_and_reap(proc: SpawnedProcess) -> None:
    # Reaped before returning: a child never waited for stays a zombie, and its transport
    # is left for the garbage collector to find "still running". A cancellation arriving
    # meanwhile does not cut the (bounded) wait short; it is raised once it is over.
    _signal_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    if await _wait_out(asyncio.ensure_future(_exited(proc, KILL_GRACE_SECONDS))):
        raise asyncio.CancelledError  # reaped (the wait is bounded); now pass it on


async def _wait_out(future: asyncio.Future) -> bool:
    """Wait until `future` is done whatever cancellations arrive (they do not reach it);
    True when one arrived. The future's own outcome is left in it."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait({future})
        except asyncio.CancelledError:
            cancelled = True
    return cancelled


async def _kill_group(proc: SpawnedProcess) -> None:
    # The session leader's pid is the group id; it stays reserved while any member lives.
    _signal_group(proc.pid, signal.SIGTERM)
    await _exited(proc, KILL_GRACE_SECONDS)
    # Members that ignored SIGTERM, or outlived a leader that did not.
    _signal_group(proc.pid, signal.SIGKILL)
    await _exited(proc, KILL_GRACE_SECONDS)


async def _exited(proc: SpawnedProcess, limit: float) -> bool:
    """Whether the leader has exited (and been reaped), waiting up to `limit` seconds.

    Its exit, not Process.wait(): on Python 3.11 wait() also waits until every output pipe
    is closed, which a process that left the session can put off for ever.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while proc.returncode is None:
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(_EXIT_POLL_SECONDS)
    return True


def _close_pipes(proc: SpawnedProcess) -> None:
    # A process that escaped the group may still hold the output pipes: close our ends
    # rather than leave them open until it exits.
    proc.close()


async def _finish_readers(tasks: list[asyncio.Future]) -> None:
    # Pipes close once every member is dead; a process that left the session could keep
    # them open for ever, so the partial output is taken after a bounded wait.
    _done, pending = await asyncio.wait(tasks, timeout=_DRAIN_AFTER_KILL_SECONDS)
    for task in pending:
        task.cancel()
    if pending:
        log.warning("output pipes still open after killing a timed-out process group")


async def _read_pipe(pipe: BinaryIO, into: _CappedReader) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(into.stream), pipe
    )
    try:
        await into.drain()
    finally:
        transport.close()
