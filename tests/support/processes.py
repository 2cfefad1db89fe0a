"""Processes seen through /proc, for the tests that watch child processes come and go."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

EXIT_TIMEOUT = 15.0


def process_state(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rpartition(")")[2].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """Running: an exited process not yet reaped (a zombie, Z; or dead, X) is not (the
    container's init may not reap orphans)."""
    state = process_state(pid)
    return state is not None and state[0] not in ("Z", "X")


def cmdline(pid: int) -> str:
    """The command line, arguments joined by spaces ("" once the process is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def children(pid: int) -> set[int]:
    """Every process (zombies too) whose parent is `pid`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = process_state(int(entry.name))
            if stat is not None and stat[1] == pid:
                found.add(int(entry.name))
    return found


def child_running(parent: int, module: str, timeout: float = 10.0) -> int:
    """The pid of `parent`'s running child whose command line names `module` (waits for
    it to appear)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in children(parent):
            if alive(pid) and module in cmdline(pid):
                return pid
        time.sleep(0.02)
    raise AssertionError(f"no {module} process under pid {parent}")


def wait_gone(pid: int, timeout: float = EXIT_TIMEOUT) -> bool:
    """Whether `pid` stopped running within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


async def gone_within(pid: int, timeout: float) -> bool:
    """Whether `pid` stopped running within `timeout` seconds (checked once more at the
    end), without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        await asyncio.sleep(0.02)
    return not alive(pid)


@contextlib.contextmanager
def reaped(pid: int) -> Iterator[int]:
    """Kill `pid` at the end if the test left it running (it would outlive the test)."""
    try:
        yield pid
    finally:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
