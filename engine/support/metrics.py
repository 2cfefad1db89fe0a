"""Hookyard's Prometheus metrics, from a registry owned by one app.

Served as `GET /metrics` by engine.http.metrics_api. Counters move where the work
happens: the ingest handler counts webhook requests by hook and status
(`count_webhook`); the roles report through `Runtime.observe` (trigger instances
processed, rule matches, executions finished, deliveries); the store reports each
group-commit batch.
Queue depths and the age of the oldest waiting item are read from the store (one cheap
query per queue) when /metrics is scraped. Each app has its own CollectorRegistry, so
several apps in one process (tests) never share or collide on metrics.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import generate_latest

from engine.errors import StoreError

log = logging.getLogger(__name__)

# Hook names not defined anywhere are counted under one label, so a scanner posting
# random paths cannot grow the metric without bound.
UNKNOWN_WEBHOOK = "<unknown>"
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)


class Metrics:
    """The metrics of one app; `observe` is the Runtime observer."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # Webhook requests by (hook, status): a plain count per request, turned into the
        # counter family when scraped (a prometheus_client child per request — labels(),
        # a lock — cost more than the rest of counting). Hook labels are bounded (see
        # UNKNOWN_WEBHOOK), statuses too.
        self._webhook_counts: collections.Counter[tuple[str, int]] = collections.Counter()
        r.register(_WebhookCounts(self._webhook_counts))
        self.trigger_instances = Counter(
            "hookyard_trigger_instances_processed",
            "Trigger instances the rules worker finished, by final status.",
            ["status"],
            registry=r,
        )
        self.rule_matches = Counter(
            "hookyard_rule_matches",
            "Trigger instances a rule matched, by rule.",
            ["rule"],
            registry=r,
        )
        self.executions = Counter(
            "hookyard_executions_finished",
            "Executions that reached a final status, by action and status.",
            ["action", "status"],
            registry=r,
        )
        self.execution_seconds = Histogram(
            "hookyard_execution_duration_seconds",
            "Run time of finished executions (start to end), by action and status.",
            ["action", "status"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        # The outbound deliveries worker reports here: runtime.observe("delivery_finished",
        # subscription, outcome).
        self.deliveries = Counter(
            "hookyard_deliveries",
            "Outbound webhook delivery attempts by subscription and outcome.",
            ["subscription", "outcome"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "hookyard_queue_depth", "Items waiting in a queue.", ["queue"], registry=r
        )
        self.queue_oldest = Gauge(
            "hookyard_queue_oldest_age_seconds",
            "Age of the oldest item waiting in a queue (0 when empty).",
            ["queue"],
            registry=r,
        )
        self.commit_batch = Histogram(
            "hookyard_store_commit_batch_size",
            "Trigger instances per group-commit transaction.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "hookyard_store_commit_seconds",
            "Time to write and commit one group-commit batch.",
            buckets=_COMMIT_BUCKETS,
            registry=r,
        )
        self.circuit_open = Gauge(
            "hookyard_subscription_circuit_open",
            "1 while an outbound subscription's circuit is tripped (open or half-open).",
            ["subscription"],
            registry=r,
        )
        self.consecutive_failures = Gauge(
            "hookyard_subscription_consecutive_failures",
            "Failed delivery attempts in a row per outbound subscription.",
            ["subscription"],
            registry=r,
        )
        self.rate_limited = Counter(
            "hookyard_rate_limited",
            "Requests refused with 429 by a rate limit, by what was limited (webhook, api_key).",
            ["kind", "name"],
            registry=r,
        )
        self.purged = Counter(
            "hookyard_purged",
            "Records the retention role deleted, by kind.",
            ["kind"],
            registry=r,
        )
        self.reloads = Counter(
            "hookyard_reloads",
            "Rule and pack reloads by outcome (ok, errors).",
            ["outcome"],
            registry=r,
        )

    def count_webhook(self, hook: str, status: int) -> None:
        self._webhook_counts[hook, status] += 1

    # --- observers ------------------------------------------------------------------------

    def observe(self, event: str, *details: Any) -> None:
        handler = getattr(self, f"_on_{event}", None)
        if handler is not None:
            handler(*details)

    def _on_rules_evaluated(self, status: str, matched: Any) -> None:
        self.trigger_instances.labels(status).inc()
        for ref in matched:  # refs of the rules that matched
            self.rule_matches.labels(ref).inc()

    def _on_execution_finished(self, execution: Any) -> None:
        self.executions.labels(execution.action, execution.status).inc()
        if execution.started_at is not None and execution.finished_at is not None:
            seconds = (execution.finished_at - execution.started_at).total_seconds()
            self.execution_seconds.labels(execution.action, execution.status).observe(
                max(0.0, seconds)
            )

    def _on_delivery_finished(self, subscription: str, outcome: str) -> None:
        self.deliveries.labels(subscription, outcome).inc()

    def _on_rate_limited(self, kind: str, name: str) -> None:
        self.rate_limited.labels(kind, name).inc()

    def _on_purged(self, kind: str, count: int) -> None:
        self.purged.labels(kind).inc(count)

    def _on_reloaded(self, errors: int) -> None:
        self.reloads.labels("errors" if errors else "ok").inc()

    def commit(self, size: int, seconds: float) -> None:
        self.commit_batch.observe(size)
        self.commit_seconds.observe(seconds)

    async def render(self, store: Any) -> bytes:
        try:
            stats = await store.queue_stats()
        except StoreError as exc:
            log.warning("metrics: queue statistics unavailable: %s", exc)
            stats = {}
        for queue, values in stats.items():
            self.queue_depth.labels(queue).set(values["depth"])
            self.queue_oldest.labels(queue).set(values["oldest_age_seconds"])
        try:
            subscriptions = await store.list_subscriptions()
        except StoreError as exc:
            log.warning("metrics: subscriptions unavailable: %s", exc)
            subscriptions = []
        # Read from the store: the circuit is shared by every process sending.
        self.circuit_open.clear()
        self.consecutive_failures.clear()
        for sub in subscriptions:
            self.circuit_open.labels(sub.id).set(int(sub.circuit_open_until is not None))
            self.consecutive_failures.labels(sub.id).set(sub.consecutive_failures)
        return generate_latest(self.registry)


class _WebhookCounts:
    """hookyard_webhooks_received{webhook, status}, read from the counts at scrape time."""

    def __init__(self, counts: collections.Counter[tuple[str, int]]) -> None:
        self._counts = counts

    def collect(self):
        family = CounterMetricFamily(
            "hookyard_webhooks_received",
            "Webhook requests by hook name and HTTP status code.",
            labels=["webhook", "status"],
        )
        for (hook, status), count in sorted(self._counts.items()):
            family.add_metric([hook, str(status)], count)
        yield family
