"""Starting action processes off the event loop.

asyncio.create_subprocess_exec forks and execs on the loop's own thread: in a process of
~80 MB that is 2 to 3 ms per action with the loop (and every webhook it answers) stopped. Here
`subprocess.Popen` runs on a spawner thread, which does that work without the GIL, and the
started process is then watched from the loop: its pipes as asyncio streams, its exit
through a pidfd (Linux ≥ 5.3) the loop polls, reaped there with waitpid — no thread per
child.

`SpawnedProcess` offers what engine.runners.process uses of asyncio.subprocess.Process:
pid, returncode, stdin/stdout/stderr streams, wait(), kill(), and close() for the pipes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# Two threads: a start is mostly a wait for the kernel; one more lets two overlap.
_SPAWNER = ThreadPoolExecutor(2, thread_name_prefix="hookyard-spawner")


class SpawnedProcess:
    def __init__(self, popen: subprocess.Popen) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.returncode: int | None = None
        self.stdin: asyncio.StreamWriter | None = None
        self.stdout: asyncio.StreamReader | None = None
        self.stderr: asyncio.StreamReader | None = None
        self._transports: list[asyncio.BaseTransport] = []
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pidfd = -1

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        popen = self._popen
        for name in ("stdout", "stderr"):
            pipe = getattr(popen, name)
            if pipe is None:
                continue
            reader = asyncio.StreamReader(loop=loop)
            transport, _ = await loop.connect_read_pipe(
                lambda reader=reader: asyncio.StreamReaderProtocol(reader, loop=loop), pipe
            )
            self._transports.append(transport)
            setattr(self, name, reader)
        if popen.stdin is not None:
            transport, protocol = await loop.connect_write_pipe(
                lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop), loop=loop),
                popen.stdin,
            )
            self._transports.append(transport)
            self.stdin = asyncio.StreamWriter(transport, protocol, None, loop)
        self._pidfd = os.pidfd_open(self.pid)
        loop.add_reader(self._pidfd, self._reap)
        self._reap()  # it may have exited already

    def _reap(self) -> None:
        if self.returncode is not None:
            return
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: its status is gone
            pid, status = self.pid, 255 << 8
        if pid == 0:
            return  # still running (a spurious wake-up)
        self.returncode = os.waitstatus_to_exitcode(status)
        self._popen.returncode = self.returncode  # Popen's finalizer must not wait for it
        self._stop_watching()
        if not self._exited.done():
            self._exited.set_result(self.returncode)

    def _stop_watching(self) -> None:
        if self._pidfd >= 0:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        """Close our ends of the pipes (a process that escaped its group may hold them)."""
        for transport in self._transports:
            transport.close()


async def spawn(
    argv: Sequence[str],
    *,
    stdin: int,
    env: Mapping[str, str],
    cwd: str | None,
    pass_fds: Sequence[int] = (),
) -> SpawnedProcess:
    """Start `argv` in a new session, with stdout and stderr piped, from the spawner
    thread. OSError when it cannot be started."""
    loop = asyncio.get_running_loop()
    options: dict[str, Any] = {
        "stdin": stdin,
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
        "env": dict(env),
        "cwd": cwd,
        "pass_fds": tuple(pass_fds),
        "start_new_session": True,
    }
    popen = await loop.run_in_executor(_SPAWNER, lambda: subprocess.Popen(list(argv), **options))
    process = SpawnedProcess(popen)
    try:
        await process._connect()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(popen.pid, 0)
        popen.returncode = -9
        process._stop_watching()
        process.close()
        for pipe in (popen.stdin, popen.stdout, popen.stderr):
            if pipe is not None:
                pipe.close()
        raise
    return process
