"""The outbound part of the store contract, on SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine.errors import LeaseLost, NotFound
from engine.model.records import (
    ENFORCEMENT_SUCCEEDED,
    PROCESSED,
    SUCCEEDED,
    EnforcementOutcome,
    NewExecution,
    NewTriggerInstance,
    utcnow,
)
from engine.outbound.breaker import Breaker
from engine.outbound.delivery import AttemptResult
from engine.outbound.subscriptions import Secret, Subscription
from engine.store import Store
from tests.support.postgres import truncate_all


def subscription(sid: str, events: tuple[str, ...] = (), **fields) -> Subscription:
    return Subscription(
        id=sid,
        url=f"http://127.0.0.1:9/{sid}",
        custom_headers={"X-Sub": sid},
        events=events,
        secrets=(Secret("whsec_c2VjcmV0"),),
        **fields,
    )


def attempt(status: int | None, error: str | None = None) -> AttemptResult:
    return AttemptResult(utcnow(), status, error, 1.5, "body")


async def claim_all(store: Store, limit: int = 100, per_subscription: int = 100, busy=None):
    return await store.claim_deliveries(limit, 30.0, per_subscription, busy or {})


async def test_no_subscription_means_no_event_rows(store: Store) -> None:
    await store.add_trigger_instance(NewTriggerInstance("t", {"a": 1}))
    assert (await store.list_deliveries({}, 10, 0)).total == 0
    assert await claim_all(store) == []


async def test_events_fan_out_to_matching_enabled_subscriptions_in_sequence(store: Store):
    await store.create_subscription(subscription("all"))
    await store.create_subscription(subscription("created", ("trigger_instance.created",)))
    await store.create_subscription(subscription("off", enabled=False))
    items = [NewTriggerInstance("t", {"n": n, "big": 2**64 + n}) for n in range(3)]
    await store.add_trigger_instances(items)
    claimed = await claim_all(store)
    assert sorted((c.subscription.id, c.delivery.sequence) for c in claimed) == [
        ("all", 1),
        ("all", 2),
        ("all", 3),
        ("created", 1),
        ("created", 2),
        ("created", 3),
    ]
    first = next(c for c in claimed if c.subscription.id == "all" and c.delivery.sequence == 1)
    assert first.subscription.custom_headers == {"X-Sub": "all"}
    assert '"big":18446744073709551616' in first.event_data


async def test_enforcements_and_execution_changes_are_events_of_the_same_transaction(
    store: Store,
) -> None:
    await store.create_subscription(subscription("all"))
    await store.add_trigger_instance(NewTriggerInstance("t", {}))
    [instance] = await store.claim_trigger_instances(1, 30)
    execution = NewExecution("core.noop", {})
    outcome = EnforcementOutcome("p.r", ENFORCEMENT_SUCCEEDED, execution=execution)
    await store.record_enforcements(instance.id, instance.lease_token or "", [outcome], PROCESSED)
    [claimed_ex] = await store.claim_executions(1, 30)
    await store.start_execution(claimed_ex.id, claimed_ex.lease_token or "")
    await store.finish_execution(claimed_ex.id, claimed_ex.lease_token or "", SUCCEEDED, {})
    page = await store.list_deliveries({"subscription": "all"}, 100, 0)
    by_sequence = sorted(page.items, key=lambda d: d.sequence)
    assert [d.event_type for d in by_sequence] == [
        "trigger_instance.created",
        "execution.created",
        "rule.enforced",
        "trigger_instance.processed",
        "execution.updated",
        "execution.updated",
        "execution.updated",
    ]


async def test_a_lost_lease_writes_neither_the_change_nor_its_event(store: Store) -> None:
    await store.create_subscription(subscription("all"))
    await store.add_trigger_instance(NewTriggerInstance("t", {}))
    [instance] = await store.claim_trigger_instances(1, 30)
    with pytest.raises(LeaseLost):
        await store.record_enforcements(instance.id, "stale", [], PROCESSED)
    types = [d.event_type for d in (await store.list_deliveries({}, 100, 0)).items]
    assert types == ["trigger_instance.created"]


async def test_claims_respect_the_per_subscription_limit(store: Store) -> None:
    await store.create_subscription(subscription("a"))
    await store.create_subscription(subscription("b"))
    await store.add_trigger_instances([NewTriggerInstance("t", {}) for _ in range(4)])
    first = await claim_all(store, per_subscription=2, busy={"a": 1})
    assert sorted(c.subscription.id for c in first) == ["a", "b", "b"]
    # Claimed ones are not claimable again while their lease runs.
    second = await claim_all(store, per_subscription=10)
    assert sorted(c.subscription.id for c in second) == ["a", "a", "a", "b", "b"]


async def test_attempts_retry_then_exhaust_with_an_event_and_auto_disable(store: Store) -> None:
    await store.create_subscription(subscription("bad", ("trigger_instance.created",)))
    await store.create_subscription(subscription("watch", ("delivery.exhausted",)))
    await store.add_trigger_instance(NewTriggerInstance("t", {}))
    [claimed] = await claim_all(store)
    token = claimed.delivery.lease_token or ""
    retry_at = utcnow() - timedelta(seconds=1)
    pending = await store.complete_delivery(claimed.delivery.id, token, attempt(500), retry_at, 0)
    assert (pending.status, pending.attempts, pending.last_status_code) == ("pending", 1, 500)
    with pytest.raises(LeaseLost):
        await store.complete_delivery(claimed.delivery.id, token, attempt(200), None, 0)
    [again] = await claim_all(store)
    failed = await store.complete_delivery(
        again.delivery.id, again.delivery.lease_token or "", attempt(None, "down"), None, 0.000001
    )
    assert (failed.status, failed.attempts, failed.last_error) == ("failed", 2, "down")
    assert [a["status_code"] for a in failed.attempt_log] == [500, None]
    bad = await store.get_subscription("bad")
    assert bad.enabled is False and bad.failing_since is not None
    [notice] = await claim_all(store)
    assert notice.subscription.id == "watch" and notice.delivery.event_type == "delivery.exhausted"
    assert f'"delivery_id":"{failed.id}"' in notice.event_data


async def test_success_clears_the_failure_streak(store: Store) -> None:
    await store.create_subscription(subscription("s"))
    await store.add_trigger_instance(NewTriggerInstance("t", {}))
    [claimed] = await claim_all(store)
    token = claimed.delivery.lease_token or ""
    await store.complete_delivery(claimed.delivery.id, token, attempt(500), utcnow(), 0)
    assert (await store.get_subscription("s")).failing_since is not None
    [again] = await claim_all(store)
    done = await store.complete_delivery(
        again.delivery.id, again.delivery.lease_token or "", attempt(204), None, 0
    )
    assert done.status == "succeeded" and done.next_attempt_at is None
    assert (await store.get_subscription("s")).failing_since is None


async def test_release_redeliver_recover_and_delete(store: Store) -> None:
    await store.create_subscription(subscription("s"))
    await store.add_trigger_instance(NewTriggerInstance("t", {}))
    [claimed] = await claim_all(store)
    await store.release_deliveries({claimed.delivery.id: claimed.delivery.lease_token or ""})
    [claimed] = await claim_all(store)
    failed = await store.complete_delivery(
        claimed.delivery.id, claimed.delivery.lease_token or "", attempt(404), None, 0
    )
    [recovered] = await store.recover_deliveries("s", utcnow() - timedelta(hours=1))
    assert recovered.redelivery_of == failed.id and recovered.sequence == 2
    assert await store.recover_deliveries("s", utcnow() - timedelta(hours=1)) == []
    manual = await store.redeliver(failed.id)
    assert manual.sequence == 3 and manual.status == "pending"
    await store.delete_subscription("s")
    with pytest.raises(NotFound):
        await store.get_delivery(manual.id)
    with pytest.raises(NotFound):
        await store.delete_subscription("s")


async def test_update_and_global_subscription(store: Store) -> None:
    created = await store.create_subscription(subscription("s"))
    updated = await store.update_subscription(
        created.id, {"url": "http://127.0.0.1:9/new", "events": ("rule.enforced",)}
    )
    assert updated.url.endswith("/new") and updated.events == ("rule.enforced",)
    await store.put_global_subscription(subscription("global"))
    await store.put_global_subscription(
        Subscription(
            id="global",
            url="http://127.0.0.1:9/moved",
            custom_headers={"Authorization": "Bearer k"},
            events=(),
            secrets=(Secret("whsec_bmV3"),),
        )
    )
    kept = await store.get_subscription("global")
    # The secret made on first start stays: receivers configured with it keep verifying.
    assert kept.url.endswith("/moved") and kept.secrets[0].value == "whsec_c2VjcmV0"
    await store.put_global_subscription(None)
    assert (await store.get_subscription("global")).enabled is False


async def test_a_half_open_circuit_lets_one_probe_out_across_processes(open_store, store_url):
    first_process = await open_store()
    if store_url.startswith("postgresql://"):
        await truncate_all(store_url)
    second_process = await open_store()
    await first_process.create_subscription(subscription("s", ("trigger_instance.created",)))
    await first_process.add_trigger_instances([NewTriggerInstance("t", {"n": n}) for n in range(3)])
    claimed = await claim_all(first_process, per_subscription=1)
    assert len(claimed) == 1
    # One failure trips a threshold-1 breaker for a cooldown already over: half-open.
    tripping = Breaker(threshold=1, cooldown=0.0)
    delivery = claimed[0].delivery
    await first_process.complete_delivery(
        delivery.id, delivery.lease_token or "", attempt(503), utcnow(), 0, tripping
    )
    assert (await first_process.get_subscription("s")).circuit_open_until is not None
    probes = [
        *await claim_all(first_process, per_subscription=5),
        *await claim_all(second_process, per_subscription=5),
    ]
    assert len(probes) == 1  # one probe, whichever process took it
    # While the probe is out the circuit is open again: nothing else is claimed.
    assert await claim_all(second_process) == [] and await claim_all(first_process) == []
    probe = probes[0].delivery
    await first_process.complete_delivery(
        probe.id, probe.lease_token or "", attempt(200), None, 0, tripping
    )
    after = await first_process.get_subscription("s")
    assert (after.circuit_open_until, after.consecutive_failures) == (None, 0)
    assert len(await claim_all(second_process)) == 2  # closed: the rest go
