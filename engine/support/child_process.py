"""What the child processes of a Hookyard process share: how they are started and ended.

The ingest writer (engine.ingest.writer) and the rule evaluator
(engine.workers.evaluator) each run `python -m <module>` with a socket to their parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys


def python_module_command(module: str, *args: str) -> list[str]:
    # -P: the working folder is not put first on the child's import path (a stray
    # engine/ there must not be imported); the parent's own path is given instead.
    return [sys.executable, "-P", "-m", module, *args]


def child_environment() -> dict[str, str]:
    """The parent's environment, its import path included: the child imports the same
    engine package, wherever it came from."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(entry for entry in sys.path if entry)
    return environment


async def reap(process: asyncio.subprocess.Process) -> None:
    """Kill `process` (if it still runs) and wait for its exit."""
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child: be killed (SIGKILL) when the parent process dies, even by SIGKILL, so
    a child busy in a loop never outlives it (Linux; elsewhere the closed socket ends it
    at its next read)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before prctl ran: then this process was re-parented.
    if os.getppid() == 1:
        os._exit(1)
