"""The outbound part of SqlStore (engine.store.outbound_base): subscriptions and their
deliveries, each method one dialect operation (engine.store.ops.subscriptions,
deliveries) run as SqlStore runs the others."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from engine.model.records import Page, utcnow
from engine.outbound.breaker import Breaker
from engine.outbound.delivery import AttemptResult, ClaimedDelivery, Delivery
from engine.outbound.subscriptions import Subscription
from engine.store import codec
from engine.store.outbound_rows import DELIVERY_FILTERS


class SqlOutbound:
    """Subscriptions and deliveries (mixed into engine.store.sql_store.SqlStore)."""

    _read: Any
    _read_snapshot: Any
    _write: Any
    _wake: Any
    dialect: Any

    # --- subscriptions -------------------------------------------------------------------

    async def create_subscription(self, subscription: Subscription) -> Subscription:
        await self._write(self.dialect.insert_subscription, subscription)
        return await self._read(self.dialect.get_subscription, subscription.id)

    async def get_subscription(self, subscription_id: str) -> Subscription:
        return await self._read(self.dialect.get_subscription, subscription_id)

    async def list_subscriptions(self) -> list[Subscription]:
        return await self._read(self.dialect.list_subscriptions)

    async def update_subscription(
        self, subscription_id: str, changes: Mapping[str, Any]
    ) -> Subscription:
        return await self._write(self.dialect.update_subscription, subscription_id, dict(changes))

    async def delete_subscription(self, subscription_id: str) -> None:
        await self._write(self.dialect.delete_subscription, subscription_id)

    async def put_global_subscription(self, subscription: Subscription | None) -> None:
        await self._write(self.dialect.put_global_subscription, subscription)

    # --- deliveries ----------------------------------------------------------------------

    async def claim_deliveries(
        self, limit: int, lease_seconds: float, per_subscription: int, busy: Mapping[str, int]
    ) -> list[ClaimedDelivery]:
        return await self._write(
            self.dialect.claim_deliveries,
            limit,
            lease_seconds,
            per_subscription,
            dict(busy),
            utcnow(),
        )

    async def complete_delivery(
        self,
        delivery_id: str,
        lease_token: str,
        result: AttemptResult,
        retry_at: datetime | None,
        auto_disable_after: float,
        breaker: Breaker | None = None,
    ) -> Delivery:
        return await self._write(
            self.dialect.complete_delivery,
            delivery_id,
            lease_token,
            result,
            retry_at,
            auto_disable_after,
            breaker,
        )

    async def release_deliveries(self, leases: Mapping[str, str]) -> None:
        if leases:
            await self._write(self.dialect.release_deliveries, dict(leases), utcnow())

    async def get_delivery(self, delivery_id: str) -> Delivery:
        return await self._read(self.dialect.get_delivery, delivery_id)

    async def list_deliveries(self, filters: Mapping[str, Any], limit: int, offset: int) -> Page:
        conditions = codec.parse_filters(filters, DELIVERY_FILTERS)
        return await self._read_snapshot(self.dialect.list_deliveries, conditions, limit, offset)

    async def redeliver(self, delivery_id: str) -> Delivery:
        delivery = await self._write(self.dialect.redeliver, delivery_id, utcnow())
        self._wake("deliveries")
        return delivery

    async def recover_deliveries(self, subscription_id: str, since: datetime) -> list[Delivery]:
        recovered = await self._write(
            self.dialect.recover_deliveries, subscription_id, since, utcnow()
        )
        self._wake("deliveries")
        return recovered
