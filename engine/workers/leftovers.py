"""What a dead worker's actions leave behind, and how a worker makes sure it is gone.

While an action runs, its process group is watched by the worker's guard process
(engine.runners.group_guard), which kills it if the worker dies, and recorded with the
execution (host, boot, pid namespace, group id, start time, the worker's pid and start
time). The record is the second line of defence, for what the guard could not reach (the
guard killed too, a group started in the instant before the worker died):

- a worker re-claiming an execution whose previous attempt recorded a group on this host
  kills that group, and waits until it is gone, before attempt 2 starts — so the side
  effect never runs twice at once;
- a worker starting up kills the groups recorded on this host by workers that are no longer
  alive. A group whose worker still runs (another `hookyard serve` on this host sharing a
  PostgreSQL database) is never touched: that worker owns it, and its lease says so.

A group is only signalled when the pid still names the recorded process (same start time),
or names no process at all (engine.runners.process_identity.group_may_be_killed).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from engine.errors import LeaseLost, StoreError
from engine.model.records import Execution
from engine.runners.group_guard import GroupGuard
from engine.runners.process_identity import (
    HostIdentity,
    ProcessRecord,
    group_alive,
    kill_group,
    start_time,
    this_host,
)
from engine.store import Store

log = logging.getLogger(__name__)

# How long a killed group may take to be gone before attempt 2 is put off.
GONE_TIMEOUT_SECONDS = 10.0
KILLED, ABSENT, STUCK = "killed", "absent", "stuck"
_GONE_POLL_SECONDS = 0.05


class ActionProcesses:
    """One actions worker's process groups: guarded, recorded, and leftovers killed."""

    def __init__(self, store: Store, host: HostIdentity | None = None) -> None:
        self._store = store
        self._host = host if host is not None else this_host()
        # Without /proc (not Linux) nothing is recorded or killed; groups still die on
        # timeout and cancel as before.
        self._guard = GroupGuard() if self._host is not None else None
        self._pid = os.getpid()
        self._start_time = start_time(self._pid)
        self._recording: set[asyncio.Task] = set()

    def watch_for(self, execution: Execution) -> _ExecutionWatch | None:
        if self._host is None:
            return None
        return _ExecutionWatch(self, execution)

    async def kill_left_over(self, execution: Execution) -> bool:
        """Kill the group a previous attempt of `execution` left on this host; False when it
        is still there after GONE_TIMEOUT_SECONDS (attempt 2 must then wait)."""
        if self._host is None:
            return True
        try:
            records = await self._store.execution_processes([execution.id])
        except StoreError as exc:
            log.error("cannot read the process of execution %s: %s", execution.id, exc)
            return False
        record = records.get(execution.id)
        if record is None:
            return True
        if not self._host.same_as(record):
            log.info(
                "execution %s: attempt %d ran on host %s; its guard there kills what is left",
                execution.id,
                execution.attempt - 1,
                record.get("host"),
            )
            return True
        return await self._kill(execution.id, record) != STUCK

    async def sweep(self) -> int:
        """At start-up: kill the groups recorded on this host by workers no longer alive.
        Returns how many groups were signalled."""
        if self._host is None:
            return 0
        try:
            records = await self._store.execution_processes()
        except StoreError as exc:
            log.error("cannot list the processes of unfinished executions: %s", exc)
            return 0
        killed = 0
        for execution_id, record in records.items():
            if not self._host.same_as(record) or _worker_alive(record):
                continue
            if await self._kill(execution_id, record, quiet=True) == KILLED:
                killed += 1
        return killed

    async def close(self) -> None:
        if self._recording:
            await asyncio.gather(*self._recording, return_exceptions=True)
        if self._guard is not None:
            await asyncio.to_thread(self._guard.close)

    async def _kill(self, execution_id: str, record: dict[str, Any], quiet: bool = False) -> str:
        """KILLED (and gone), ABSENT (nothing of it left, or the pid is another process's
        now), or STUCK (still there GONE_TIMEOUT_SECONDS after SIGKILL)."""
        pgid, recorded_start = record.get("pgid"), record.get("start_time")
        if not isinstance(pgid, int) or not isinstance(recorded_start, int):
            return ABSENT
        if not kill_group(pgid, recorded_start):
            return ABSENT
        log.warning("killed process group %d left running by execution %s", pgid, execution_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GONE_TIMEOUT_SECONDS
        while group_alive(pgid):
            if loop.time() >= deadline:
                if not quiet:
                    log.error(
                        "process group %d of execution %s still runs %g s after SIGKILL;"
                        " its next attempt waits",
                        pgid,
                        execution_id,
                        GONE_TIMEOUT_SECONDS,
                    )
                return STUCK
            await asyncio.sleep(_GONE_POLL_SECONDS)
        return KILLED

    def _record(self, execution: Execution, pgid: int, timeout: float) -> None:
        assert self._host is not None
        started = start_time(pgid)
        if started is None:
            return  # already exited and reaped: nothing to guard or to record
        if self._guard is not None:
            self._guard.watch(pgid, started, timeout)
        record = ProcessRecord(
            host=self._host.hostname,
            boot_id=self._host.boot_id,
            pid_namespace=self._host.pid_namespace,
            pgid=pgid,
            start_time=started,
            worker_pid=self._pid,
            worker_start_time=self._start_time,
        )
        task = asyncio.get_running_loop().create_task(
            self._store_record(execution, record.as_record())
        )
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _store_record(self, execution: Execution, record: dict[str, Any]) -> None:
        try:
            await self._store.record_execution_process(
                execution.id, execution.lease_token or "", record
            )
        except LeaseLost:
            pass  # finished or re-claimed meanwhile: this attempt's group is not the one left
        except StoreError as exc:
            log.warning("cannot record the process of execution %s: %s", execution.id, exc)

    def _release(self, pgid: int) -> None:
        if self._guard is not None:
            self._guard.release(pgid)


class _ExecutionWatch:
    """engine.runners.base.ProcessWatch for one execution."""

    def __init__(self, owner: ActionProcesses, execution: Execution) -> None:
        self._owner = owner
        self._execution = execution

    def started(self, pgid: int, timeout: float) -> None:
        self._owner._record(self._execution, pgid, timeout)

    def ended(self, pgid: int) -> None:
        self._owner._release(pgid)


def _worker_alive(record: dict[str, Any]) -> bool:
    pid, recorded_start = record.get("worker_pid"), record.get("worker_start_time")
    if not isinstance(pid, int):
        return False
    current = start_time(pid)
    return current is not None and current == recorded_start
