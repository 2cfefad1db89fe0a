"""The store's collaborator for secret action parameters: every new execution passes it.

The store calls `sealer.seal_execution(new)` on each execution it is about to write
(create_execution, and the executions inside record_enforcements / record_decisions), so
whatever creates executions — rules, the API — gets its secrets sealed alike. The sealer
itself (engine.secrets.sealing.ParameterSealer) knows which parameters are secret and
holds the key; the store only knows this one method. A store nobody gave a sealer to
writes executions as they come.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

from engine.model.records import EnforcementOutcome, InstanceDecision, NewExecution


class ExecutionSealer(Protocol):
    def seal_execution(self, new: NewExecution) -> NewExecution:
        """`new` with its secret parameters sealed (`new` itself when none are)."""
        ...


class NoSealing:
    """The sealer of a store that was given none: nothing is secret."""

    def seal_execution(self, new: NewExecution) -> NewExecution:
        return new


def sealed_outcomes(
    sealer: ExecutionSealer, outcomes: Sequence[EnforcementOutcome]
) -> Sequence[EnforcementOutcome]:
    """`outcomes` itself when nothing in it is secret (the rules worker's hot path)."""
    sealed = list(outcomes)
    changed = False
    for position, outcome in enumerate(outcomes):
        if outcome.execution is None:
            continue
        execution = sealer.seal_execution(outcome.execution)
        if execution is not outcome.execution:
            sealed[position] = dataclasses.replace(outcome, execution=execution)
            changed = True
    return sealed if changed else outcomes


def sealed_decisions(
    sealer: ExecutionSealer, decisions: Sequence[InstanceDecision]
) -> list[InstanceDecision]:
    sealed = []
    for decision in decisions:
        outcomes = sealed_outcomes(sealer, decision.outcomes)
        if outcomes is not decision.outcomes:
            decision = dataclasses.replace(decision, outcomes=list(outcomes))
        sealed.append(decision)
    return sealed
