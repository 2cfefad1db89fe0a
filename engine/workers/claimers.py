"""This process as a claimer of work, and taking over what a dead one left claimed.

A process killed while it held leases (trigger instances being decided, executions
running, deliveries being sent) left that work claimed until the leases ran out: up to
`workers.lease_seconds` (30 s) before a restarted `hookyard serve` picked its own work up
again. Before its roles claim anything, a process now registers itself with the store and
takes over the leases of claimers that are provably dead (engine.store.ops.claimers):
registered on this host and boot, and their pid no longer names the process that
registered (engine.runners.process_identity). A claimer on another host cannot be judged
from here; while one is registered, leases expire as before. Without /proc (not Linux)
nothing is registered or taken over.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from typing import Any

from engine.runners.process_identity import HostIdentity, start_time, this_host
from engine.store.base import Store

log = logging.getLogger(__name__)

# Roles that claim work with a lease; a process running none of them registers nothing.
CLAIMING_ROLES = frozenset({"rules", "actions", "deliveries", "workflows"})


def claimer_is_dead(record: Mapping[str, Any], host: HostIdentity) -> bool:
    """True only when `record` ran on this host and boot and its process is gone."""
    if not host.same_as(record):
        return False
    pid, recorded_start = record.get("pid"), record.get("pid_start")
    if not isinstance(pid, int) or recorded_start is None:
        return False
    return start_time(pid) != recorded_start


class Claimer:
    def __init__(self, store: Store, host: HostIdentity | None = None) -> None:
        self._store = store
        self._host = host if host is not None else this_host()
        self.id = secrets.token_hex(12)
        self._registered = False

    async def start(self) -> dict[str, int]:
        """Register, then take over dead claimers' leases; the counts taken over."""
        pid = os.getpid()
        host = self._host
        record = {
            "host": host.hostname if host else None,
            "boot_id": host.boot_id if host else None,
            "pid_namespace": host.pid_namespace if host else None,
            "pid": pid,
            "pid_start": start_time(pid) if host else None,
        }
        await self._store.register_claimer(self.id, record)
        self._registered = True
        if host is None:
            return {}
        taken = await self._store.take_over_dead_claims(
            self.id, lambda other: claimer_is_dead(other, host)
        )
        work = {name: count for name, count in taken.items() if name != "dead_claimers"}
        if any(work.values()):
            log.warning(
                "took over the work of %d dead process(es) at once instead of waiting for "
                "their leases: %s",
                taken["dead_claimers"],
                ", ".join(f"{count} {name}" for name, count in work.items() if count),
            )
        return taken

    async def stop(self) -> None:
        if self._registered:
            self._registered = False
            await self._store.unregister_claimer(self.id)
