"""The deliveries worker: claim due deliveries, POST them signed, record every attempt.

Deliveries are rows claimed with a lease (longer than the send timeout), so a process
killed mid-send leaves a delivery another process (or this one, restarted) sends again
once the lease is over; a retry scheduled before the kill simply comes due. At most
`delivery_concurrency` sends run at once, at most `per_subscription_concurrency` of them
to one subscription, so a slow receiver cannot take every slot; nothing is claimed that
cannot start at once, so no in-memory queue builds up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from datetime import timedelta

from engine.errors import DestinationRefused, LeaseLost, OutboundError, StoreError
from engine.model.records import utcnow
from engine.outbound.breaker import Breaker
from engine.outbound.delivery import ClaimedDelivery
from engine.outbound.pacing import DeliveryPacer
from engine.outbound.policy import RetryPolicy
from engine.outbound.sender import Sender
from engine.outbound.signing import generate_secret
from engine.outbound.ssrf import DestinationGuard
from engine.outbound.subscriptions import GLOBAL_SUBSCRIPTION_ID, Secret, Subscription
from engine.process.runtime import Runtime
from engine.workers import sleep_until

log = logging.getLogger(__name__)

QUEUE = "deliveries"
# Added to the send timeout for the lease, so a send never outlives its claim.
LEASE_MARGIN = 30.0


async def run_deliveries_worker(runtime: Runtime, stop: asyncio.Event) -> None:
    settings = runtime.settings.outbound
    poll = runtime.settings.workers.poll_interval
    store = runtime.store
    policy = RetryPolicy.from_settings(settings)
    guard = DestinationGuard(settings.allow_private)
    await sync_global_subscription(runtime, guard)
    lease = settings.delivery_timeout + LEASE_MARGIN
    running: dict[asyncio.Task, str] = {}
    log.info(
        "deliveries worker started (concurrency %d, %d per subscription, %d attempts)",
        settings.delivery_concurrency,
        settings.per_subscription_concurrency,
        policy.max_attempts,
    )
    keyrings = runtime.keyrings
    sender = Sender(guard, keyrings, settings.delivery_timeout, settings.response_excerpt)
    pacer = DeliveryPacer()
    async with sender:
        try:
            while not stop.is_set():
                free = settings.delivery_concurrency - len(running)
                if free <= 0:
                    await sleep_until(
                        stop, asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    )
                    continue
                busy = _paced(Counter(running.values()), pacer, settings)
                try:
                    claimed = await store.claim_deliveries(
                        free, lease, settings.per_subscription_concurrency, busy
                    )
                except StoreError as exc:
                    log.error("deliveries worker cannot claim: %s", exc)
                    await sleep_until(stop, asyncio.sleep(poll))
                    continue
                for item in claimed:
                    task = asyncio.create_task(deliver(runtime, sender, policy, item, pacer))
                    running[task] = item.delivery.subscription_id
                    task.add_done_callback(lambda done: running.pop(done, None))
                if not claimed:
                    await _idle(store, set(running), poll, stop)
        finally:
            if running:
                # In-flight sends finish within the role's grace period; past it they are
                # cancelled and their leases expire, so another claim sends them again.
                await asyncio.gather(*running, return_exceptions=True)
            log.info("deliveries worker stopped")


def _paced(busy: Counter, pacer: DeliveryPacer, settings) -> Counter:
    """`busy` raised for rate-limited subscriptions so that a claim takes no more of
    their deliveries than their buckets allow now."""
    for subscription_id in pacer.limited():
        spare = pacer.spare(subscription_id)
        if spare is not None:
            busy[subscription_id] = max(
                busy[subscription_id], settings.per_subscription_concurrency - spare
            )
    return busy


async def deliver(
    runtime: Runtime,
    sender: Sender,
    policy: RetryPolicy,
    claimed: ClaimedDelivery,
    pacer: DeliveryPacer | None = None,
) -> None:
    delivery = claimed.delivery
    extra = {
        "delivery": delivery.id,
        "subscription": delivery.subscription_id,
        "event_type": delivery.event_type,
    }
    if pacer is not None:
        await pacer.take(delivery.subscription_id, claimed.subscription.rate_limit)
    result = await sender.send(claimed)
    retry_at = None
    if not result.succeeded:
        delay = policy.delay_after(delivery.attempts + 1)
        if delay is not None:
            retry_at = utcnow() + timedelta(seconds=delay)
    try:
        recorded = await runtime.store.complete_delivery(
            delivery.id,
            delivery.lease_token or "",
            result,
            retry_at,
            runtime.settings.outbound.auto_disable_after,
            Breaker(
                runtime.settings.outbound.breaker_threshold,
                runtime.settings.outbound.breaker_cooldown,
            ),
        )
    except LeaseLost:
        log.warning("delivery %s was re-claimed while sending; result dropped", delivery.id)
        return
    except StoreError as exc:
        log.error("recording delivery %s failed: %s", delivery.id, exc, extra=extra)
        return
    # Metrics: one attempt of this subscription ended as succeeded, pending (will retry)
    # or failed (exhausted).
    runtime.observe("delivery_finished", delivery.subscription_id, recorded.status)
    log.info(
        "delivery %s attempt %d: %s",
        delivery.id,
        recorded.attempts,
        recorded.status if result.succeeded else f"{result.error} -> {recorded.status}",
        extra=extra,
    )


async def _idle(store, running: set[asyncio.Task], poll: float, stop: asyncio.Event) -> None:
    """Until a wake-up hint, the poll interval, a send finishing (a slot frees) or stop."""
    hint = asyncio.ensure_future(store.wait_for_work(QUEUE, poll))
    try:
        await sleep_until(stop, asyncio.wait({hint, *running}, return_when=asyncio.FIRST_COMPLETED))
    finally:
        if not hint.done():
            hint.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await hint


async def sync_global_subscription(runtime: Runtime, guard: DestinationGuard) -> None:
    """Create, update or disable the subscription configured by global_webhook_url."""
    settings = runtime.settings.outbound
    url = settings.global_webhook_url
    subscription = None
    if url:
        try:
            await guard.check_url(url)
        except (DestinationRefused, OutboundError) as exc:
            # Deliveries will fail with the same reason recorded on each; say it now too.
            log.error("outbound.global_webhook_url: %s", exc)
        headers = {}
        if settings.global_webhook_api_key:
            headers["Authorization"] = f"Bearer {settings.global_webhook_api_key}"
        subscription = Subscription(
            id=GLOBAL_SUBSCRIPTION_ID,
            url=url,
            custom_headers=headers,
            events=(),
            secrets=(Secret(generate_secret()),),
            description="from outbound.global_webhook_url",
            created_at=utcnow(),
        )
    try:
        await runtime.store.put_global_subscription(subscription)
    except StoreError as exc:
        log.error("cannot save the global webhook subscription: %s", exc)
