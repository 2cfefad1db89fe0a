"""Crash tests on real `hookyard serve` processes: SIGKILL mid-stream, restart, count.

What is checked, on SQLite (one process, killed and restarted on the same file) and on
PostgreSQL (two processes on one database, one killed while it holds claimed work):
every webhook answered 202 ends `processed` with exactly one enforcement and one requested
execution; a request that got no answer may or may not have been stored, but if it was,
it is complete; nothing exists that was never posted.

The rule's slow criterion (LOAD_RULE in tests/support/serve.py) keeps the rules worker
behind the ingest, so a kill always finds work left: pending instances and a claimed batch.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter

import aiohttp
import pytest

from tests.support.stream import (
    CONCURRENCY,
    DRAIN_TIMEOUT,
    StreamResult,
    count,
    list_all,
    post_stream,
    wait_drained,
)

pytestmark = pytest.mark.slow

# Short leases so a dead worker's claims come back within the test's time.
LEASE_SECONDS = 2
# About 4 ms (SQLite test) and 8 ms (PostgreSQL test) of evaluation per instance.
SQLITE_PAD = "a" * 17 + "b"
PG_PAD = "a" * 18 + "b"
ENFORCED_LINE = re.compile(r"enforced on (\w+): ")


async def enforcement_counts(
    session: aiohttp.ClientSession, base: str, instance_ids: list[str]
) -> dict[str, int]:
    """X-Total-Count of ?trigger_instance=<id> for each id (the st2 CLI's question)."""
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(instance_id: str) -> tuple[str, int]:
        async with limit:
            url = base + "/api/v1/ruleenforcements"
            return instance_id, await count(session, url, trigger_instance=instance_id)

    return dict(await asyncio.gather(*(one(i) for i in instance_ids)))


async def check_exactly_once(
    session: aiohttp.ClientSession, base: str, stream: StreamResult, rule_ref: str
) -> list[dict]:
    """The end state after recovery; returns every trigger instance."""
    assert set(stream.refused.values()) <= {503}, stream.refused
    instances = await list_all(session, base + "/api/v1/triggerinstances")
    by_n: dict[int, dict] = {}
    for instance in instances:
        n = instance["payload"]["body"]["n"]
        assert n not in by_n, f"request n={n} was stored twice"
        by_n[n] = instance
    # Nothing exists that was not posted; every 202 is there under the id it was given.
    assert set(by_n) <= stream.posted
    for n, instance_id in stream.accepted.items():
        assert n in by_n, f"n={n} was answered 202 ({instance_id}) and is lost"
        assert by_n[n]["id"] == instance_id
    # Stored, answered or not, means complete: processed, one enforcement, one execution.
    assert Counter(i["status"] for i in instances) == {"processed": len(instances)}

    enforcements = await list_all(session, base + "/api/v1/ruleenforcements")
    per_instance = Counter(e["trigger_instance_id"] for e in enforcements)
    assert per_instance == Counter({i["id"]: 1 for i in instances}), "lost or duplicate"
    assert {e["rule"]["ref"] for e in enforcements} == {rule_ref}
    assert {e["status"] for e in enforcements} == {"succeeded"}
    accepted_counts = await enforcement_counts(session, base, list(stream.accepted.values()))
    assert set(accepted_counts.values()) == {1}

    executions = await list_all(session, base + "/api/v1/executions")
    assert {x["id"] for x in executions} == {e["execution_id"] for e in enforcements}
    by_id = {i["id"]: i for i in instances}
    for execution in executions:
        instance = by_id[execution["context"]["trigger_instance"]["id"]]
        assert execution["status"] == "requested"
        assert execution["parameters"] == {"n": instance["payload"]["body"]["n"]}
        assert execution["context"]["rule"]["ref"] == rule_ref
    return instances


def enforced_ids(log: str) -> set[str]:
    """Trigger instances a process logged as enforced (logged after the commit)."""
    return {match.group(1) for match in ENFORCED_LINE.finditer(log)}


# --- SQLite: kill -9 mid-stream, restart on the same file ---------------------------


async def test_sqlite_kill_mid_stream_loses_and_duplicates_nothing(serve):
    env = {"HOOKYARD_WORKERS__LEASE_SECONDS": str(LEASE_SECONDS)}
    first = serve.start(env=env, name="first")
    kill_after = 300
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        stream = await post_stream(
            session,
            [first.url],
            webhook=serve.webhook,
            pad=SQLITE_PAD,
            max_requests=5000,
            stop_when=lambda result: len(result.accepted) >= kill_after,
            on_stop=first.proc.kill,
        )
        assert first.kill() == -9
        assert len(stream.accepted) >= kill_after

        # An api-only process reads the crashed file as it was left: every 202 is there,
        # and the rules worker had work left (pending instances, and usually a claimed
        # batch whose lease the restarted worker waits out; not asserted: the worker may
        # have been between claims when it died).
        observer = serve.start(env=env, roles="api", name="observer")
        instances = await list_all(session, observer.url + "/api/v1/triggerinstances")
        assert set(stream.accepted.values()) <= {i["id"] for i in instances}
        left = Counter(i["status"] for i in instances)
        assert left["pending"] + left["processing"] > 0, left
        assert observer.terminate() == 0

        restarted = serve.start(env=env, name="restarted")
        await wait_drained(session, restarted.url)
        instances = await check_exactly_once(session, restarted.url, stream, serve.rule_ref)
        # Enforcements are recorded once: those done before the crash are not redone.
        assert enforced_ids(first.log_text()).isdisjoint(enforced_ids(restarted.log_text()))
        assert enforced_ids(first.log_text()) | enforced_ids(restarted.log_text()) <= {
            i["id"] for i in instances
        }
        assert restarted.terminate() == 0


# --- PostgreSQL: two processes, one killed while it holds claimed work ----------------


async def test_postgres_survivor_reclaims_the_killed_process_work(pg_database, serve):
    a_batch, b_batch = 100, 5
    common = {"HOOKYARD_WORKERS__LEASE_SECONDS": str(LEASE_SECONDS)}
    a = serve.start(
        store=pg_database,
        env={**common, "HOOKYARD_WORKERS__RULES_BATCH": str(a_batch)},
        name="a",
        wait=False,
    )
    b = serve.start(
        store=pg_database,
        env={**common, "HOOKYARD_WORKERS__RULES_BATCH": str(b_batch)},
        name="b",
        wait=False,
    )
    a.wait_ready()
    b.wait_ready()
    total = 300
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        stream = await post_stream(
            session, [a.url, b.url], webhook=serve.webhook, pad=PG_PAD, max_requests=total
        )
        assert len(stream.accepted) == total, stream

        # Kill A once the instances in `processing` are more than B can hold: A then
        # holds claimed, unfinished work when it dies.
        deadline = time.monotonic() + DRAIN_TIMEOUT
        status_url = b.url + "/api/v1/triggerinstances"
        while await count(session, status_url, status="processing") < b_batch + 10:
            assert time.monotonic() < deadline, "A never held a batch of claimed work"
            await asyncio.sleep(0.01)
        assert a.kill() == -9
        processing_at_kill = {
            i["id"] for i in await list_all(session, status_url, status="processing")
        }
        assert len(processing_at_kill) > b_batch, "A's orphaned claims are not visible"

        await wait_drained(session, b.url)
        await check_exactly_once(session, b.url, stream, serve.rule_ref)

        by_a, by_b = enforced_ids(a.log_text()), enforced_ids(b.log_text())
        assert by_a and by_b, "both processes must have done work"
        assert by_a.isdisjoint(by_b)
        # What A held when it died was finished by B after A's leases expired.
        assert processing_at_kill <= by_b
        assert processing_at_kill.isdisjoint(by_a)
        assert b.terminate() == 0
