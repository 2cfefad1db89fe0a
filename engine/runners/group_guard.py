"""A guard process that kills the actions' process groups when their worker dies.

Every action runs in its own session (engine.runners.process), so that a timeout or a
cancel can kill all it started. That also means nothing kills them when the worker is
killed with SIGKILL: they would run on beside attempt 2, with no timeout enforced.

The worker starts one guard (``python -m engine.runners.group_guard <worker pid>``) and
tells it, over the guard's stdin, each action group it starts (``W <pgid> <start time>
<seconds>``) and each it has finished with (``R <pgid>``). The guard kills a watched group
with SIGKILL when

- the worker is gone: end of file on stdin (only the worker holds the write end), or its
  parent pid changed (checked twice a second, for a worker whose forked child inherited
  the pipe's write end);
- the group outlives its deadline: the action's timeout plus a margin, so the worker's own
  SIGTERM-then-SIGKILL comes first and the guard only acts for a worker that cannot.

Why a guard process rather than PR_SET_PDEATHSIG on each action: the parent-death signal
reaches only the direct child (``sh -c 'sleep 45; touch x'`` forks ``sleep``, which would
live on), fires when the forking *thread* ends rather than the process, and setting it in
the child needs ``preexec_fn``, which is not safe in a threaded process (the SQLite store
runs threads). One guard per worker costs one interpreter start when the worker starts and
two short pipe writes per action: no per-action process, no per-action interpreter.

The guard ignores SIGINT and SIGTERM: a Ctrl-C or a supervisor's SIGTERM to the whole
process group lets the worker drain its in-flight actions within its grace period, and the
guard leaves when the worker does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time

from engine.runners.process_identity import kill_group

log = logging.getLogger(__name__)

# Past an action's timeout, how long the guard leaves the worker to kill it first.
DEADLINE_MARGIN_SECONDS = 10.0
# How often the guard checks its parent pid when nothing arrives on stdin.
_PARENT_POLL_SECONDS = 0.5
_EXIT_WAIT_SECONDS = 5.0


class GroupGuard:
    """The worker's side: starts the guard on first use, restarts it if it died."""

    def __init__(self, deadline_margin: float = DEADLINE_MARGIN_SECONDS) -> None:
        self._margin = deadline_margin
        self._proc: subprocess.Popen[bytes] | None = None
        # pgid → (start time, deadline as time.monotonic()), re-sent to a restarted guard.
        self._watched: dict[int, tuple[int, float]] = {}

    def watch(self, pgid: int, start_time: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout + self._margin
        self._watched[pgid] = (start_time, deadline)
        self._send(_watch_line(pgid, start_time, deadline - time.monotonic()))

    def release(self, pgid: int) -> None:
        if self._watched.pop(pgid, None) is not None:
            self._send(f"R {pgid}\n")

    def close(self) -> None:
        """Stop the guard; it kills any group still watched (none after a clean stop)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(_EXIT_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _send(self, line: str) -> None:
        for _try in range(2):
            proc = self._running()
            if proc is None:
                return
            try:
                proc.stdin.write(line.encode())  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
                return
            except OSError as exc:  # BrokenPipeError: the guard died; start another
                log.warning("action group guard is gone (%s); restarting it", exc)
                with contextlib.suppress(OSError):
                    proc.kill()
                proc.wait()
                self._proc = None

    def _running(self) -> subprocess.Popen[bytes] | None:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._proc is not None:
            log.warning("action group guard exited with %s; restarting it", self._proc.returncode)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "engine.runners.group_guard", str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
            )
        except OSError as exc:
            log.error("cannot start the action group guard: %s", exc)
            self._proc = None
            return None
        now = time.monotonic()
        lines = [
            _watch_line(pgid, started, deadline - now)
            for pgid, (started, deadline) in self._watched.items()
        ]
        if lines:
            # The guard's pipe is empty: these fit in its buffer without blocking.
            self._proc.stdin.write("".join(lines).encode())  # type: ignore[union-attr]
        return self._proc


def _watch_line(pgid: int, start_time: int, seconds: float) -> str:
    return f"W {pgid} {start_time} {max(0.0, seconds):.3f}\n"


# --- the guard process ---------------------------------------------------------------------


def guard(parent_pid: int, stdin_fd: int = 0) -> None:
    """Watch groups as told on `stdin_fd` until the parent is gone; then kill them all."""
    watched: dict[int, tuple[int, float]] = {}
    pending = b""
    while True:
        now = time.monotonic()
        for pgid, (start, deadline) in list(watched.items()):
            if deadline <= now:
                kill_group(pgid, start)  # the action outlived its timeout: its worker is stuck
                del watched[pgid]
        wait = _PARENT_POLL_SECONDS
        if watched:
            wait = max(0.0, min(wait, min(d for _, d in watched.values()) - now))
        ready, _, _ = select.select([stdin_fd], [], [], wait)
        if ready:
            data = os.read(stdin_fd, 65536)
            if not data:
                break  # the worker is gone: nobody else holds the write end
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                _apply(line.decode("ascii", "replace").split(), watched)
        if os.getppid() != parent_pid:
            break
    for pgid, (start, _) in watched.items():
        kill_group(pgid, start)


def _apply(words: list[str], watched: dict[int, tuple[int, float]]) -> None:
    try:
        if words[0] == "W" and len(words) == 4:
            watched[int(words[1])] = (int(words[2]), time.monotonic() + float(words[3]))
        elif words[0] == "R" and len(words) == 2:
            watched.pop(int(words[1]), None)
    except (IndexError, ValueError):
        pass  # only the worker writes here; a bad line is ignored rather than fatal


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m engine.runners.group_guard WORKER_PID", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A worker that died before the guard even started is noticed on the first round:
    # what it wrote is read, then the changed parent pid ends the watch.
    guard(int(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
