"""Action processes started off the event loop (engine.runners.spawner): real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

import pytest

from engine.runners.spawner import spawn

ENV = {"PATH": "/usr/bin:/bin"}


async def test_output_exit_code_and_input_of_a_spawned_process() -> None:
    process = await spawn(
        ["/bin/sh", "-c", "read -r line; echo got $line; echo oops >&2; exit 3"],
        stdin=subprocess.PIPE,
        env=ENV,
        cwd=None,
    )
    assert process.stdin and process.stdout and process.stderr
    process.stdin.write(b"hello\n")
    await process.stdin.drain()
    process.stdin.close()
    out, err, code = await asyncio.gather(
        process.stdout.read(), process.stderr.read(), process.wait()
    )
    assert (out, err, code, process.returncode) == (b"got hello\n", b"oops\n", 3, 3)
    process.close()


async def test_a_process_that_ends_before_it_is_watched_is_still_reaped() -> None:
    process = await spawn(["/bin/true"], stdin=subprocess.DEVNULL, env=ENV, cwd=None)
    assert await asyncio.wait_for(process.wait(), 10) == 0
    with pytest.raises(ChildProcessError):  # reaped: no zombie left behind
        os.waitpid(process.pid, os.WNOHANG)
    process.close()


async def test_kill_ends_it_and_its_own_session() -> None:
    process = await spawn(["/bin/sleep", "30"], stdin=subprocess.DEVNULL, env=ENV, cwd=None)
    assert os.getsid(process.pid) == process.pid  # a session (and group) of its own
    process.kill()
    assert await asyncio.wait_for(process.wait(), 10) == -signal.SIGKILL
    process.kill()  # already gone: nothing to do, no error
    process.close()


async def test_a_program_that_does_not_exist_raises_and_leaves_nothing() -> None:
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        await spawn(["/nonexistent/program"], stdin=subprocess.DEVNULL, env=ENV, cwd=None)
    assert set(os.listdir("/proc/self/fd")) <= before
