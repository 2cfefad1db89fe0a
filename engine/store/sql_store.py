"""Every public store method, written once over a small backend interface.

`SqlStore` turns each method of the `Store` contract (engine.store.base) into one call of
a dialect operation — a function `op(conn, *args)` from the op modules — run as a read, a
write transaction or a consistent (snapshot) read. A backend (engine.store.sqlite,
engine.store.postgres) supplies only what really differs:

- `dialect`: the table of its operations (engine.store.dialect.Dialect), one per store
  method;
- `_read`, `_write`, `_read_snapshot`: how an operation runs (SQLite: on reader threads
  and the one writer thread, operations are plain functions; PostgreSQL: on pool
  connections, operations are coroutines);
- `_insert_batch`: how one group commit of webhooks is written;
- the lifecycle (`open`, `close`, `ping`) and the wake-up hints (`wait_for_work`).

The clock: every operation that may need the time gets `utcnow()` of this process.
PostgreSQL's lease operations ignore it and use the database's `now()`, one clock shared
by every process claiming from that database.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from engine.config import StoreSettings
from engine.errors import StoreError, StoreUnavailable
from engine.model.apikeys import ApiKey
from engine.model.kv import SYSTEM_SCOPE, KeyValuePair
from engine.model.records import (
    Accepted,
    EnforcementOutcome,
    Execution,
    InstanceDecision,
    NewExecution,
    NewTriggerInstance,
    Page,
    TriggerInstance,
    utcnow,
)
from engine.model.roles import Grants
from engine.model.stored_rules import StoredRule
from engine.store import codec
from engine.store.backlog import BacklogGauge
from engine.store.base import Store
from engine.store.batching import GroupCommitStats, GroupCommitter
from engine.store.dialect import Dialect, Op, Step
from engine.store.sealer import sealed_decisions, sealed_outcomes
from engine.store.sql_outbound import SqlOutbound
from engine.store.sql_policies import SqlPolicies
from engine.store.sql_stream import SqlStreamFeed
from engine.store.sql_workflows import SqlWorkflowRuns

T = TypeVar("T")
# Queues with wake-up hints (`wait_for_work`).
# "stream": the change feed has new entries (engine.store.ops.stream).
QUEUES = ("trigger_instances", "executions", "deliveries", "workflows", "stream")


class SqlStore(SqlWorkflowRuns, SqlPolicies, SqlStreamFeed, SqlOutbound, Store, abc.ABC):
    """The store contract over a backend; see the module docstring for what one supplies."""

    dialect: Dialect
    # Transactions of grouped execution writes in flight at once: SQLite has one writer;
    # PostgreSQL writes the next group while one waits for its commit.
    grouped_concurrency = 1

    def __init__(self, settings: StoreSettings, where: str) -> None:
        self.settings = settings
        # Names the database in error messages ("sqlite /path", "postgresql host/db").
        self.where = where
        # Committed add_trigger_instances transactions (tests and metrics read it).
        self.commit_batches = 0
        self._committer: GroupCommitter[tuple[NewTriggerInstance, str], Accepted] | None = None
        # Execution starts and finishes arriving together share a transaction (`_grouped`).
        self._execution_writes: GroupCommitter[Sequence[Step], Any] | None = None
        self._work = {queue: asyncio.Event() for queue in QUEUES}
        self._backlog = BacklogGauge(self._count_pending)
        self._closed = False

    # --- the backend interface -------------------------------------------------------

    @abc.abstractmethod
    async def _read(self, operation: Op, *args: Any) -> Any:
        """`operation(conn, *args)` on a connection that only reads."""

    @abc.abstractmethod
    async def _write(self, operation: Op, *args: Any) -> Any:
        """`operation(conn, *args)` in a write transaction."""

    @abc.abstractmethod
    async def _read_snapshot(self, operation: Op, *args: Any) -> Any:
        """`operation(conn, *args)` seeing one state of the database (a page and its
        total count agree)."""

    @abc.abstractmethod
    async def _insert_batch(
        self, batch: Sequence[tuple[NewTriggerInstance, str]]
    ) -> tuple[list[Accepted], int]:
        """Write one group commit of webhooks: (answers in order, rows newly stored)."""

    def _start_committer(self, name: str, concurrency: int = 1) -> None:
        self._committer = GroupCommitter(
            self._add_prepared,
            batch_max=self.settings.batch_max,
            timeout=self.settings.busy_timeout,
            name=name,
            concurrency=concurrency,
        )
        self._committer.start()

    async def _grouped(self, *steps: Step) -> Any:
        """Run `steps` (ops with their arguments) in a transaction shared with the other
        execution writes queued meanwhile (engine.store.ops.grouped); a stale lease or a
        missing row fails this item only."""
        if self._execution_writes is None:
            if self._closed:
                raise StoreUnavailable(f"{self.where}: the store is closed")
            self._execution_writes = GroupCommitter(
                self._write_grouped,
                batch_max=self.settings.batch_max,
                timeout=self.settings.busy_timeout,
                name="execution writes",
                concurrency=self.grouped_concurrency,
            )
            self._execution_writes.start()
        answer = await self._execution_writes.enqueue(steps)
        if isinstance(answer, StoreError):
            raise answer
        return answer

    @property
    def grouped_write_stats(self) -> GroupCommitStats:
        """Transactions (batches) and items of the grouped execution writes so far."""
        writes = self._execution_writes
        return writes.stats if writes is not None else GroupCommitStats()

    async def _write_grouped(self, items: Sequence[Sequence[Step]]) -> list[Any]:
        return await self._write(self.dialect.run_grouped, items)

    async def _close_grouped(self) -> None:
        writes, self._execution_writes = self._execution_writes, None
        if writes is not None:
            await writes.close()

    def _wake(self, queue: str) -> None:
        self._work[queue].set()

    def _wake_all(self) -> None:
        for event in self._work.values():
            event.set()

    def _hint_event(self, queue: str) -> asyncio.Event:
        event = self._work.get(queue)
        if event is None:
            raise StoreError(f"unknown queue {queue!r}; known: {', '.join(QUEUES)}")
        return event

    async def _wait_for_hint(self, queue: str, timeout: float) -> None:
        event = self._hint_event(queue)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        # Cleared only after waking, so a hint set between a claim and this wait is kept.
        event.clear()

    # --- trigger instances -------------------------------------------------------------

    async def add_trigger_instances(self, batch: Sequence[NewTriggerInstance]) -> list[Accepted]:
        return await self._add_prepared([codec.prepare_trigger_instance(item) for item in batch])

    async def add_trigger_instance(self, item: NewTriggerInstance) -> Accepted:
        if self._committer is None:
            raise StoreUnavailable(f"{self.where}: the store is not open")
        return await self._committer.enqueue(codec.prepare_trigger_instance(item))

    async def _add_prepared(
        self, batch: Sequence[tuple[NewTriggerInstance, str]]
    ) -> list[Accepted]:
        if not batch:
            return []
        started = time.perf_counter()
        answers, inserted = await self._insert_batch(batch)
        self.commit_batches += 1
        self.observe_commit(len(batch), time.perf_counter() - started)
        self.count_ingested(inserted)
        return answers

    def count_ingested(self, stored: int) -> None:
        if stored:
            self._backlog.added(stored)
            self._wake("trigger_instances")
            # Their change-feed entries too (the ingest writer child stores them).
            self._wake("stream")

    async def pending_backlog(self) -> int:
        return await self._backlog.value()

    def known_backlog(self) -> int | None:
        return self._backlog.known()

    async def _count_pending(self) -> int:
        return await self._read(self.dialect.count_pending)

    async def claim_trigger_instances(
        self, limit: int, lease_seconds: float
    ) -> list[TriggerInstance]:
        claimed = await self._write(
            self.dialect.claim_trigger_instances, limit, lease_seconds, utcnow()
        )
        self._backlog.claimed(len(claimed))
        return claimed

    async def release_trigger_instances(self, leases: Mapping[str, str]) -> None:
        if leases:
            await self._write(self.dialect.release_trigger_instances, dict(leases), utcnow())
            self._backlog.forget()
            self._wake("trigger_instances")

    async def get_trigger_instance(self, instance_id: str) -> TriggerInstance:
        return await self._read(self.dialect.get_trigger_instance, instance_id)

    async def list_trigger_instances(
        self, filters: Mapping[str, Any], limit: int, offset: int
    ) -> Page:
        return await self._list(
            "trigger_instances", codec.TRIGGER_INSTANCE_FILTERS, filters, limit, offset
        )

    async def list_enforcements(self, filters: Mapping[str, Any], limit: int, offset: int) -> Page:
        return await self._list("enforcements", codec.ENFORCEMENT_FILTERS, filters, limit, offset)

    async def _list(
        self,
        table: str,
        known: Mapping[str, codec.FilterSpec],
        filters: Mapping[str, Any],
        limit: int,
        offset: int,
    ) -> Page:
        codec.check_paging(limit, offset)
        conditions = codec.parse_filters(filters, known)
        return await self._read_snapshot(self.dialect.list_rows, table, conditions, limit, offset)

    # --- rule decisions ------------------------------------------------------------------

    async def record_enforcements(
        self,
        instance_id: str,
        lease_token: str,
        outcomes: Sequence[EnforcementOutcome],
        final_status: str,
        evaluations: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[str]:
        codec.check_final_status(final_status)
        outcomes = sealed_outcomes(self.sealer, outcomes)
        written, executions = await self._write(
            self.dialect.record_enforcements,
            instance_id,
            lease_token,
            outcomes,
            final_status,
            utcnow(),
            evaluations,
        )
        if executions:
            self._wake("executions")
        return written

    async def record_decisions(
        self, decisions: Sequence[InstanceDecision]
    ) -> list[list[str] | StoreError]:
        for decision in decisions:
            codec.check_final_status(decision.final_status)
        decisions = sealed_decisions(self.sealer, decisions)
        results, executions = await self._write(self.dialect.record_decisions, decisions, utcnow())
        if executions:
            self._wake("executions")
        return results

    async def get_rule_evaluations(self, instance_id: str) -> list[Any] | None:
        return await self._read(self.dialect.get_rule_evaluations, instance_id)

    async def queue_stats(self) -> dict[str, dict[str, float]]:
        return await self._read(self.dialect.queue_stats)

    # --- executions ----------------------------------------------------------------------

    async def create_execution(self, new: NewExecution) -> Execution:
        new = self.sealer.seal_execution(new)
        execution = await self._write(self.dialect.create_execution, new, utcnow())
        self._wake("executions")
        return execution

    async def claim_executions(
        self,
        limit: int,
        lease_seconds: float,
        max_attempts: int = 2,
        *,
        only_actions: Collection[str] | None = None,
    ) -> list[Execution]:
        generic, fired = self._ended_source()
        actions = sorted(only_actions) if only_actions is not None else None
        claimed = await self._write(
            self.dialect.claim_executions,
            limit,
            lease_seconds,
            max_attempts,
            utcnow(),
            generic,
            actions,
        )
        self.count_ingested(sum(fired.values()))
        return claimed

    def _ended_source(
        self,
    ) -> tuple[Callable[[Execution], Sequence[NewTriggerInstance]] | None, dict[str, int]]:
        """`ended_triggers` counting what it builds per execution (a transaction retried
        counts once), so the rules worker hears of the instances after the commit."""
        source, fired = self.ended_triggers, {}
        if source is None:
            return None, fired

        def counted(execution: Execution) -> Sequence[NewTriggerInstance]:
            items = source(execution)
            fired[execution.id] = len(items)
            return items

        return counted, fired

    async def start_execution(self, execution_id: str, lease_token: str) -> Execution:
        return await self._grouped(
            (self.dialect.start_execution, (execution_id, lease_token, utcnow()))
        )

    async def heartbeat_execution(
        self, execution_id: str, lease_token: str, lease_seconds: float
    ) -> str:
        return await self._write(
            self.dialect.heartbeat_execution, execution_id, lease_token, lease_seconds, utcnow()
        )

    async def finish_execution(
        self,
        execution_id: str,
        lease_token: str,
        status: str,
        result: Any,
        generic: Callable[[Execution], Sequence[NewTriggerInstance]] | None = None,
        *,
        start_first: bool = False,
    ) -> Execution:
        codec.check_terminal_status(status)
        result_json = codec.dumps(result, "execution result")
        fired: list[int] = []  # how many generic instances the transaction stored

        def counted(execution: Execution) -> Sequence[NewTriggerInstance]:
            fired.clear()  # a retried transaction counts once
            items = generic(execution) if generic is not None else ()
            fired.append(len(items))
            return items

        now = utcnow()
        finish_args = (execution_id, lease_token, status, result_json, now)
        finish = (
            self.dialect.finish_execution,
            (*finish_args, counted if generic is not None else None),
        )
        if start_first:
            start = (self.dialect.start_execution, (execution_id, lease_token, now))
            finished = await self._grouped(start, finish)
        else:
            finished = await self._grouped(finish)
        self.count_ingested(sum(fired))
        if finished.parent:
            self._wake("workflows")  # its workflow's run is due (same transaction)
        return finished

    async def request_cancel(self, execution_id: str) -> tuple[Execution, str]:
        generic, fired = self._ended_source()
        answer = await self._write(self.dialect.request_cancel, execution_id, utcnow(), generic)
        self.count_ingested(sum(fired.values()))
        self._wake("workflows")
        return answer

    async def record_execution_process(
        self, execution_id: str, lease_token: str, process: Mapping[str, Any]
    ) -> None:
        await self._grouped(
            (self.dialect.record_execution_process, (execution_id, lease_token, dict(process)))
        )

    async def execution_processes(
        self, execution_ids: Sequence[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        return await self._read(self.dialect.execution_processes, execution_ids)

    async def register_claimer(self, claimer_id: str, record: Mapping[str, Any]) -> None:
        await self._write(self.dialect.register_claimer, claimer_id, dict(record), utcnow())

    async def unregister_claimer(self, claimer_id: str) -> None:
        await self._write(self.dialect.unregister_claimer, claimer_id)

    async def take_over_dead_claims(
        self, claimer_id: str, is_dead: Callable[[Mapping[str, Any]], bool]
    ) -> dict[str, int]:
        taken = await self._write(self.dialect.take_over_dead_claims, claimer_id, is_dead, utcnow())
        if any(taken.get(queue) for queue in QUEUES):
            self._wake_all()
        return taken

    async def get_execution(self, execution_id: str) -> Execution:
        return await self._read(self.dialect.get_execution, execution_id)

    async def list_executions(self, filters: Mapping[str, Any], limit: int, offset: int) -> Page:
        return await self._list("executions", codec.EXECUTION_FILTERS, filters, limit, offset)

    # --- API keys ------------------------------------------------------------------------

    async def create_api_key(self, key: ApiKey, *, only_if_none: bool = False) -> bool:
        return await self._write(self.dialect.create_api_key, key, only_if_none)

    async def list_api_keys(self) -> list[ApiKey]:
        return await self._read(self.dialect.list_api_keys)

    async def find_api_key(self, prefix: str) -> ApiKey | None:
        return await self._read(self.dialect.find_api_key, prefix)

    async def get_api_key(self, key_id: str) -> ApiKey:
        return await self._read(self.dialect.get_api_key, key_id)

    async def extend_api_key(self, key_id: str, by: timedelta) -> ApiKey:
        return await self._write(self.dialect.extend_api_key, key_id, by, utcnow())

    async def set_api_key_enabled(self, key_id: str, enabled: bool) -> ApiKey:
        return await self._write(self.dialect.set_api_key_enabled, key_id, enabled)

    async def set_api_key_role(self, key_id: str, role: str, grants: Grants) -> ApiKey:
        return await self._write(self.dialect.set_api_key_role, key_id, role, grants)

    async def delete_api_keys(self, key_ids: Sequence[str]) -> list[str]:
        return await self._write(self.dialect.delete_api_keys, list(key_ids))

    async def set_api_key_rate(self, key_id: str, rate: float, burst: float) -> ApiKey:
        return await self._write(self.dialect.set_api_key_rate, key_id, rate, burst)

    async def take_rate_tokens(
        self, key: str, rate: float, burst: float, want: int
    ) -> tuple[int, float]:
        return await self._write(self.dialect.take_rate_tokens, key, rate, burst, want, utcnow())

    # --- datastore (st2kv) -----------------------------------------------------------------

    async def put_kv(self, pair: KeyValuePair) -> KeyValuePair:
        return await self._write(self.dialect.put_kv, pair, utcnow())

    async def get_kv(
        self, name: str, scope: str = SYSTEM_SCOPE, user: str | None = None
    ) -> KeyValuePair:
        return await self._read(self.dialect.get_kv, name, scope, user, utcnow())

    async def list_kv(
        self, prefix: str | None = None, scope: str | None = None, user: str | None = None
    ) -> list[KeyValuePair]:
        return await self._read(self.dialect.list_kv, prefix, scope, user, utcnow())

    async def delete_kv(
        self, name: str, scope: str = SYSTEM_SCOPE, user: str | None = None
    ) -> bool:
        return await self._write(self.dialect.delete_kv, name, scope, user, utcnow())

    # --- stored rules ------------------------------------------------------------------------

    async def create_rule(self, ref: str, definition: Mapping[str, Any]) -> StoredRule:
        return await self._write(self.dialect.create_rule, ref, definition, utcnow())

    async def replace_rule(self, ref: str, definition: Mapping[str, Any]) -> StoredRule:
        return await self._write(self.dialect.replace_rule, ref, definition, utcnow())

    async def delete_rule(self, ref: str) -> None:
        await self._write(self.dialect.delete_rule, ref)

    async def list_rules(self) -> list[StoredRule]:
        return await self._read(self.dialect.list_rules)

    async def rules_version(self) -> int:
        return await self._read(self.dialect.rules_version)

    # --- retention ------------------------------------------------------------------------

    async def purge(
        self,
        kind: str,
        before: datetime,
        *,
        limit: int,
        dedupe_before: datetime | None = None,
        dry_run: bool = False,
    ) -> int:
        run = self._read_snapshot if dry_run else self._write
        return await run(self.dialect.purge, kind, before, dedupe_before or before, limit, dry_run)
