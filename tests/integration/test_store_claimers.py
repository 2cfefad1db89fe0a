"""Claimers: a process starting after a crash takes over the dead one's leases at once
(engine.store.ops.claimers, engine.workers.claimers), on SQLite and PostgreSQL.

The work is leased with 300 s leases, so only a take-over can make it claimable again
within the test; a real process that ran and was killed is what "dead" means.
"""

from __future__ import annotations

import os
import subprocess
import sys

from engine.model.records import NewExecution, NewTriggerInstance
from engine.outbound.subscriptions import Secret, Subscription
from engine.runners.process_identity import start_time, this_host
from engine.store import Store
from engine.workers.claimers import Claimer, claimer_is_dead

LONG_LEASE = 300.0


def record_of(pid: int, **changes) -> dict:
    host = this_host()
    assert host is not None, "these tests need Linux's /proc"
    record = {
        "host": host.hostname,
        "boot_id": host.boot_id,
        "pid_namespace": host.pid_namespace,
        "pid": pid,
        "pid_start": start_time(pid),
    }
    return {**record, **changes}


def dead_process_record() -> dict:
    """The record of a process that ran on this host and has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    record = record_of(child.pid)
    child.kill()
    child.wait()
    return record


async def lease_everything(store: Store) -> None:
    """One trigger instance, one execution and one delivery, each leased for 300 s."""
    await store.create_subscription(
        Subscription(
            id="sub",
            url="http://127.0.0.1:9/hook",
            custom_headers={},
            events=(),
            secrets=(Secret("whsec_c2VjcmV0"),),
        )
    )
    await store.add_trigger_instance(NewTriggerInstance("t", {"n": 1}))
    await store.create_execution(NewExecution(action="core.noop", parameters={}))
    assert len(await store.claim_trigger_instances(10, LONG_LEASE)) == 1
    assert len(await store.claim_executions(10, LONG_LEASE)) == 1
    assert len(await store.claim_deliveries(100, LONG_LEASE, 100, {})) >= 1
    # Leased: nothing is claimable again.
    assert await store.claim_trigger_instances(10, LONG_LEASE) == []
    assert await store.claim_executions(10, LONG_LEASE) == []
    assert await store.claim_deliveries(100, LONG_LEASE, 100, {}) == []


async def test_a_dead_claimers_leases_are_taken_over_at_once(store: Store) -> None:
    await store.register_claimer("crashed", dead_process_record())
    await lease_everything(store)

    successor = Claimer(store)
    taken = await successor.start()
    assert taken["dead_claimers"] == 1
    assert taken["trigger_instances"] == 1 and taken["executions"] == 1
    assert taken["deliveries"] >= 1
    # Claimable now, with new tokens; the execution's attempt 2 begins.
    assert len(await store.claim_trigger_instances(10, LONG_LEASE)) == 1
    (again,) = await store.claim_executions(10, LONG_LEASE)
    assert again.status == "scheduled"
    assert len(await store.claim_deliveries(100, LONG_LEASE, 100, {})) >= 1
    # The dead row is gone: a second start-up finds nothing to take over.
    assert (await store.take_over_dead_claims("someone", lambda r: True))["dead_claimers"] == 1
    await successor.stop()


async def test_a_live_claimer_keeps_its_leases(store: Store) -> None:
    await store.register_claimer("crashed", dead_process_record())
    await store.register_claimer("alive", record_of(os.getpid()))  # this test: alive
    await lease_everything(store)

    taken = await Claimer(store).start()
    assert taken == {
        "dead_claimers": 1,
        "trigger_instances": 0,
        "executions": 0,
        "deliveries": 0,
        "workflows": 0,
    }
    assert await store.claim_trigger_instances(10, LONG_LEASE) == []
    assert await store.claim_executions(10, LONG_LEASE) == []


async def test_a_claimer_on_another_host_is_never_judged_dead(store: Store) -> None:
    await store.register_claimer("elsewhere", dead_process_record() | {"host": "other-host"})
    await lease_everything(store)
    taken = await Claimer(store).start()
    assert taken["dead_claimers"] == 0 and taken["executions"] == 0
    assert await store.claim_executions(10, LONG_LEASE) == []


async def test_a_stopped_claimer_is_forgotten_and_unregistered_leases_are_kept(
    store: Store,
) -> None:
    first = Claimer(store)
    await first.start()
    await first.stop()
    # Leases held by a process that never registered (one of an older version, during a
    # rolling upgrade): with no dead claimer found, nothing is taken over.
    await lease_everything(store)
    taken = await Claimer(store).start()
    assert taken["dead_claimers"] == 0 and taken["executions"] == 0
    assert await store.claim_executions(10, LONG_LEASE) == []


def test_dead_means_this_host_and_a_pid_that_no_longer_names_the_process() -> None:
    host = this_host()
    assert host is not None
    assert claimer_is_dead(dead_process_record(), host)
    assert not claimer_is_dead(record_of(os.getpid()), host)
    # Same pid, another process (pid reuse): the start time differs.
    assert claimer_is_dead(record_of(os.getpid(), pid_start=1), host)
    assert not claimer_is_dead(dead_process_record() | {"boot_id": "another-boot"}, host)
    assert not claimer_is_dead(dead_process_record() | {"pid_start": None}, host)
