"""The circuit breaker of outbound subscriptions (Convoy's model), as plain data.

After `threshold` failed attempts in a row to one subscription its circuit trips: for
`cooldown` seconds nothing is sent to it, and its due deliveries wait without spending
attempts (a retry that falls due meanwhile is sent afterwards, as the same attempt).
Then the circuit is half-open: one delivery — the probe — is sent; its success closes
the circuit and the waiting deliveries go, its failure trips it for another cooldown.
Any success closes it (a delivery already in flight when it tripped may be one).

A tripped circuit is `circuit_open_until` set on the subscription row: later than now is
open, not later is half-open. The claim that takes the probe moves it to the probe's
lease expiry, in its transaction, so no other claim (another process's included) takes
a second probe; the probe's outcome then sets it (engine.store.ops.deliveries).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from engine.outbound.delivery import AttemptResult
from engine.outbound.subscriptions import Subscription


@dataclass(frozen=True)
class Breaker:
    # Failed attempts in a row that trip the circuit (0: never trips).
    threshold: int = 10
    # Seconds a tripped circuit stays open before its probe.
    cooldown: float = 60.0

    def after_attempt(self, subscription: Subscription, result: AttemptResult) -> dict[str, Any]:
        """The subscription columns one finished attempt changes."""
        changes: dict[str, Any] = {}
        if result.succeeded:
            if subscription.consecutive_failures:
                changes["consecutive_failures"] = 0
            if subscription.circuit_open_until is not None:
                changes["circuit_open_until"] = None
            return changes
        failures = subscription.consecutive_failures + 1
        changes["consecutive_failures"] = failures
        if self.threshold and failures >= self.threshold:
            changes["circuit_open_until"] = result.at + timedelta(seconds=self.cooldown)
        return changes


@dataclass(frozen=True)
class Candidate:
    """A due delivery, and whether its subscription's circuit is half-open."""

    delivery_id: str
    subscription_id: str
    half_open: bool


def choose(
    candidates: Sequence[Candidate], limit: int, per_subscription: int, busy: Mapping[str, int]
) -> tuple[list[str], set[str]]:
    """The deliveries to claim now, oldest first: at most `limit`, at most
    `per_subscription` per subscription counting `busy` (sends running in this process),
    and one probe for a half-open subscription with nothing in flight here. Returns the
    ids and the subscriptions probed."""
    taken: dict[str, int] = dict(busy)
    chosen: list[str] = []
    probes: set[str] = set()
    for candidate in candidates:
        if len(chosen) >= limit:
            break
        subscription_id = candidate.subscription_id
        cap = 1 if candidate.half_open else per_subscription
        if taken.get(subscription_id, 0) >= cap:
            continue
        taken[subscription_id] = taken.get(subscription_id, 0) + 1
        chosen.append(candidate.delivery_id)
        if candidate.half_open:
            probes.add(subscription_id)
    return chosen, probes
