"""The store's sealer: every execution the store writes passes `sealer.seal_execution`,
on both backends (engine.store.sealer)."""

from __future__ import annotations

import dataclasses

from engine.model.records import (
    ENFORCEMENT_SUCCEEDED,
    PROCESSED,
    EnforcementOutcome,
    InstanceDecision,
    NewExecution,
    NewTriggerInstance,
)
from engine.store import Store


class MarkingSealer:
    """Replaces the `token` parameter, so a sealed execution is recognisable."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def seal_execution(self, new: NewExecution) -> NewExecution:
        self.seen.append(new.id)
        if "token" not in new.parameters:
            return new
        return dataclasses.replace(new, parameters={**new.parameters, "token": "SEALED"})


def _secret(action: str = "pack.act") -> NewExecution:
    return NewExecution(action=action, parameters={"token": "hunter2", "n": 1})


async def _claimed(store: Store) -> tuple[str, str]:
    item = NewTriggerInstance(trigger="core.st2.webhook", payload={"n": 1})
    await store.add_trigger_instance(item)
    (claimed,) = await store.claim_trigger_instances(10, 30.0)
    assert claimed.lease_token is not None
    return claimed.id, claimed.lease_token


def _matched(execution: NewExecution | None) -> EnforcementOutcome:
    return EnforcementOutcome(
        rule_ref="pack.rule", status=ENFORCEMENT_SUCCEEDED, execution=execution
    )


async def test_without_a_sealer_executions_are_written_as_given(store: Store) -> None:
    written = await store.create_execution(_secret())
    assert written.parameters == {"token": "hunter2", "n": 1}


async def test_create_execution_writes_what_the_sealer_returns(store: Store) -> None:
    sealer = MarkingSealer()
    store.use_sealer(sealer)
    new = _secret()
    written = await store.create_execution(new)
    assert sealer.seen == [new.id]
    assert written.parameters == {"token": "SEALED", "n": 1}
    assert (await store.get_execution(new.id)).parameters == {"token": "SEALED", "n": 1}


async def test_record_enforcements_seals_each_requested_execution(store: Store) -> None:
    store.use_sealer(MarkingSealer())
    instance_id, token = await _claimed(store)
    secret, plain = _secret(), NewExecution(action="pack.other", parameters={"n": 2})
    outcomes = [_matched(secret), _matched(plain), _matched(None)]
    await store.record_enforcements(instance_id, token, outcomes, PROCESSED)
    assert (await store.get_execution(secret.id)).parameters == {"token": "SEALED", "n": 1}
    assert (await store.get_execution(plain.id)).parameters == {"n": 2}


async def test_record_decisions_seals_each_requested_execution(store: Store) -> None:
    store.use_sealer(MarkingSealer())
    instance_id, token = await _claimed(store)
    secret = _secret()
    decision = InstanceDecision(instance_id, token, [_matched(secret)], PROCESSED)
    (result,) = await store.record_decisions([decision])
    assert isinstance(result, list) and len(result) == 1
    assert (await store.get_execution(secret.id)).parameters == {"token": "SEALED", "n": 1}
