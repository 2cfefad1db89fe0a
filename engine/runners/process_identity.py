"""Naming an OS process so that it can be found again, and killed, without ever killing
another process that reused its pid.

A pid alone is not an identity: after a crash the number may belong to something else.
With it go the host (hostname, kernel boot id, pid namespace) and the process's start time
in clock ticks since boot (/proc/<pid>/stat field 22), which a reused pid cannot share.
Linux only; elsewhere nothing is recorded and nothing is killed. Standard library only:
the group guard child (engine.runners.group_guard) imports this.
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class HostIdentity:
    hostname: str
    boot_id: str
    pid_namespace: int

    def same_as(self, record: dict[str, Any]) -> bool:
        """Whether a recorded process (ProcessRecord.as_record()) ran on this host and boot."""
        return (
            record.get("host") == self.hostname
            and record.get("boot_id") == self.boot_id
            and record.get("pid_namespace") == self.pid_namespace
        )


def this_host() -> HostIdentity | None:
    """This host, boot and pid namespace; None where /proc does not say (not Linux)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            boot_id = handle.read().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return HostIdentity(socket.gethostname(), boot_id, namespace)


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; None if there is no such process.

    A zombie still has one: it is dead but not yet reaped, and killing it is harmless.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = text.rpartition(b")")[2].split()
    try:
        return int(fields[19])  # field 22 overall; fields[0] is field 3
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class ProcessRecord:
    """An action's process group and the worker that started it, as stored with the
    execution (engine.store: record_execution_process)."""

    host: str
    boot_id: str
    pid_namespace: int
    pgid: int
    start_time: int
    worker_pid: int
    worker_start_time: int | None

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def group_may_be_killed(pgid: int, recorded_start: int | None) -> bool:
    """Whether signalling process group `pgid` can only reach what was recorded.

    The leader's pid is the group id. Linux keeps a number in use while any process still
    has it as its group id, so with no process `pgid` alive, a group of that id is what is
    left of the recorded one (or nothing). With a process of that pid alive, it must be the
    recorded leader: same start time.
    """
    current = start_time(pgid)
    return current is None or current == recorded_start


def kill_group(pgid: int, recorded_start: int | None) -> bool:
    """SIGKILL the group if it is the recorded one; True when a signal was delivered."""
    if pgid <= 1 or not group_may_be_killed(pgid, recorded_start):
        return False
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` still runs. Zombies do not count: killed, they
    wait for a parent (init, after their worker died) that may be slow to reap them."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rpartition(b")")[2].split()
        except OSError:
            continue  # exited meanwhile
        # fields[0] is the state (field 3), fields[2] the process group (field 5).
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] != b"Z":
            return True
    return False
