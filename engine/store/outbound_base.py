"""The outbound part of the store protocol: subscriptions, the event outbox, deliveries.

Events are not written through this interface: the store writes them itself, in the
transaction of the change that causes them (add_trigger_instances, record_enforcements,
create/claim/start/finish_execution, an exhausted delivery), with one delivery per
matching enabled subscription numbered by that subscription's strictly increasing
`sequence`. Deliveries are a queue claimed with a lease like the others.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from engine.model.records import Page
from engine.outbound.breaker import Breaker
from engine.outbound.delivery import AttemptResult, ClaimedDelivery, Delivery
from engine.outbound.subscriptions import Subscription


class OutboundStore(abc.ABC):
    # --- subscriptions ------------------------------------------------------------------

    @abc.abstractmethod
    async def create_subscription(self, subscription: Subscription) -> Subscription:
        """Store a new subscription; Conflict if its id is taken."""

    @abc.abstractmethod
    async def get_subscription(self, subscription_id: str) -> Subscription:
        """Raise NotFound if absent."""

    @abc.abstractmethod
    async def list_subscriptions(self) -> list[Subscription]:
        """Every subscription, oldest first."""

    @abc.abstractmethod
    async def update_subscription(
        self, subscription_id: str, changes: Mapping[str, Any]
    ) -> Subscription:
        """Set columns (url, custom_headers, events, secrets, description, enabled,
        signing_scheme, signing_options, failing_since, disabled_reason). NotFound if absent."""

    @abc.abstractmethod
    async def delete_subscription(self, subscription_id: str) -> None:
        """Delete it and its deliveries. NotFound if absent."""

    @abc.abstractmethod
    async def put_global_subscription(self, subscription: Subscription | None) -> None:
        """Create or update the configured subscription (its secret is kept once created);
        None disables an existing one."""

    # --- deliveries ---------------------------------------------------------------------

    @abc.abstractmethod
    async def claim_deliveries(
        self, limit: int, lease_seconds: float, per_subscription: int, busy: Mapping[str, int]
    ) -> list[ClaimedDelivery]:
        """Claim up to `limit` due deliveries of enabled subscriptions (pending ones whose
        next_attempt_at has come, and delivering ones whose lease expired), oldest due
        first, at most `per_subscription` minus `busy[id]` (already sending) per subscription.
        Claimed rows become `delivering` with a new lease_token."""

    @abc.abstractmethod
    async def complete_delivery(
        self,
        delivery_id: str,
        lease_token: str,
        result: AttemptResult,
        retry_at: datetime | None,
        auto_disable_after: float,
        breaker: Breaker | None = None,
    ) -> Delivery:
        """Record one attempt. Success: succeeded. Failure: pending until `retry_at`, or
        (retry_at None) failed with a delivery.exhausted event and, after
        `auto_disable_after` seconds of only failures, the subscription disabled. The
        subscription's circuit follows `breaker` (engine.outbound.breaker). LeaseLost on a
        stale token."""

    @abc.abstractmethod
    async def release_deliveries(self, leases: Mapping[str, str]) -> None:
        """Give claimed deliveries back as due now (id → lease token), e.g. on shutdown."""

    @abc.abstractmethod
    async def get_delivery(self, delivery_id: str) -> Delivery:
        """Raise NotFound if absent."""

    @abc.abstractmethod
    async def list_deliveries(self, filters: Mapping[str, Any], limit: int, offset: int) -> Page:
        """Newest first. Filters: subscription, status, event_type, event, created_gt,
        created_lt."""

    @abc.abstractmethod
    async def redeliver(self, delivery_id: str) -> Delivery:
        """A new pending delivery of the same event to the same subscription (next
        sequence, redelivery_of set). NotFound if the delivery or subscription is gone."""

    @abc.abstractmethod
    async def recover_deliveries(self, subscription_id: str, since: datetime) -> list[Delivery]:
        """Redeliver every failed, not yet redelivered delivery of the subscription created
        at or after `since`; returns the new deliveries."""
