"""The scale-out store: PostgreSQL through asyncpg.

Any number of processes share one database: claims use `FOR UPDATE SKIP LOCKED`, inserts
`NOTIFY hookyard_<queue>` and one LISTEN connection per process that waits for work turns
those into wake-up hints (opened by the first wait; polling remains the fallback; a dropped
listener is reconnected on the next wait).
Ingest is group-committed like SQLite's, as one multi-row INSERT per batch. Schema
migrations are versioned in `hookyard_schema_version` and applied under an advisory lock,
so processes starting together migrate once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import asyncpg

from engine.config import StoreSettings
from engine.errors import Conflict, StoreBusy, StoreError, StoreUnavailable
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
from engine.rules.stored import StoredRule
from engine.store import (
    apikey_ops,
    cancel_ops,
    codec,
    decision_ops,
    explain_ops,
    kv_ops,
    process_ops,
    rule_ops,
)
from engine.store import postgres_ops as ops
from engine.store.backlog import BacklogGauge
from engine.store.base import Store
from engine.store.batching import GroupCommitter
from engine.store.migrations.postgres import MIGRATIONS
from engine.store.postgres_outbound import PostgresOutbound
from engine.store.sealer import sealed_decisions, sealed_outcomes

log = logging.getLogger(__name__)

T = TypeVar("T")
QUEUES = ("trigger_instances", "executions", "deliveries")
# pg_advisory_xact_lock key for migrations: "hookyard" in ASCII.
MIGRATION_LOCK = 0x686F6F6B79617264
CONNECT_TIMEOUT = 10.0
LISTENER_RETRY_SECONDS = 1.0
# Group-commit batches of webhooks in flight at once (each on its own pool connection):
# while one waits for its commit to reach the disk, the next is already being written.
_COMMIT_CONCURRENCY = 3
# Seconds the ingest skips its one-statement insert after an enabled subscription held a
# batch back (ops.insert_trigger_instances_alone).
_SUBSCRIBED_RECHECK = 10.0


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A pool `reset` that sends nothing (see PostgresStore.open)."""


_UNAVAILABLE = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.InvalidCatalogNameError,  # the database does not exist
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    asyncpg.exceptions.InterfaceError,  # connection or pool closed
    OSError,
)
_BUSY = (
    asyncpg.exceptions.TransactionRollbackError,  # deadlock, serialization failure
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.QueryCanceledError,  # statement timeout
)


class PostgresStore(PostgresOutbound, Store):
    ingest_concurrency = _COMMIT_CONCURRENCY

    def __init__(self, url: str, settings: StoreSettings) -> None:
        self.url = url
        self.settings = settings
        self.where = f"postgresql {codec.redact_url(url)}"
        # Committed add_trigger_instances batches (tests and metrics read it).
        self.commit_batches = 0
        self._pool: asyncpg.Pool | None = None
        # The group committer's own connections (see _add_prepared).
        self._ingest_pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        # When the last LISTEN connection attempt failed (reconnects are spaced after failures).
        self._listener_failed_at: float | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._committer: GroupCommitter[tuple[NewTriggerInstance, str], Accepted] | None = None
        # Until when ingest writes in a transaction without trying one statement first.
        self._subscribed_until = 0.0
        self._work = {queue: asyncio.Event() for queue in QUEUES}
        self._backlog = BacklogGauge(self._count_pending)
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=max(1, self.settings.pool_size),
                timeout=CONNECT_TIMEOUT,
                # A statement waiting on a row or table lock gives up like SQLite's
                # busy_timeout does, so no caller waits on a batch without bound.
                server_settings={"lock_timeout": f"{int(self.settings.busy_timeout * 1000)}"},
            )
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"{self.where}: cannot connect: {exc}") from exc
        try:
            with self._translated():
                async with self._pool.acquire() as conn:
                    await self._migrate(conn)
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise
        try:
            self._ingest_pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=_COMMIT_CONCURRENCY,
                timeout=CONNECT_TIMEOUT,
                server_settings={"lock_timeout": f"{int(self.settings.busy_timeout * 1000)}"},
                # These connections only ever insert trigger instances (in a transaction or
                # one statement), which leaves no session state behind: the reset query on
                # every release (a round trip per group commit) is skipped.
                reset=_keep_session,
            )
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            await self._pool.close()
            self._pool = None
            raise StoreUnavailable(f"{self.where}: cannot connect: {exc}") from exc
        self._committer = GroupCommitter(
            self._add_prepared,
            batch_max=self.settings.batch_max,
            timeout=self.settings.busy_timeout,
            name="postgresql group commit",
            concurrency=_COMMIT_CONCURRENCY,
        )
        self._committer.start()
        # No LISTEN connection yet: the first wait_for_work opens it. A process that never
        # waits for work (an api-only process, the ingest writer child) never listens, so
        # the database does not deliver it every commit's wake-up hint.

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            # Another process may be migrating: wait for it longer than for a row lock.
            await conn.execute("SET LOCAL lock_timeout = '60s'")
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS hookyard_schema_version ("
                " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            current = await conn.fetchval(
                "SELECT coalesce(max(version), 0) FROM hookyard_schema_version"
            )
            if current > len(MIGRATIONS):
                raise StoreUnavailable(
                    f"{self.where}: schema version {current} is newer than this Hookyard"
                    f" knows ({len(MIGRATIONS)}); upgrade Hookyard"
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[version - 1]:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO hookyard_schema_version (version) VALUES ($1)", version
                )
                log.info("postgresql schema migrated", extra={"version": version})

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._committer is not None:
            await self._committer.close()
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            await asyncio.wait({self._connecting})
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(*_UNAVAILABLE, asyncpg.PostgresError):
                await listener.close(timeout=CONNECT_TIMEOUT)
        for pool in (self._ingest_pool, self._pool):
            if pool is not None:
                try:
                    await asyncio.wait_for(pool.close(), CONNECT_TIMEOUT)
                except TimeoutError:
                    pool.terminate()
        self._pool = self._ingest_pool = None
        for event in self._work.values():
            event.set()

    async def ping(self) -> None:
        await self._read(lambda conn: conn.fetchval("SELECT 1"))

    # --- wake-up hints ---------------------------------------------------------------

    async def wait_for_work(self, queue: str, timeout: float) -> None:
        event = self._work.get(queue)
        if event is None:
            raise StoreError(f"unknown queue {queue!r}; known: {', '.join(QUEUES)}")
        if self._listener is None and not self._closed:
            # One connect at a time, owned by the store: a waiter cancelled meanwhile (a
            # worker stopping, a delivery hint no longer needed) neither abandons a
            # half-open connection nor counts as a failed attempt, and a connect that
            # close() cancels ends the waits without cancelling them.
            connecting = self._connecting
            if connecting is None or connecting.done():
                connecting = asyncio.get_running_loop().create_task(
                    self._connect_listener(), name="postgresql LISTEN connection"
                )
                self._connecting = connecting
            await asyncio.wait({connecting})
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        event.clear()

    async def _connect_listener(self) -> None:
        if self._listener is not None or self._closed:
            return
        failed_at = self._listener_failed_at
        if failed_at is not None and time.monotonic() - failed_at < LISTENER_RETRY_SECONDS:
            return
        self._listener_failed_at = time.monotonic()
        # Any failure leaves the workers polling: nothing but close()'s cancellation
        # leaves this task, whose waiters do not read its result.
        try:
            conn = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT)
        except Exception as exc:
            log.warning("LISTEN connection failed; polling", extra={"error": repr(exc)})
            return
        try:
            for queue in QUEUES:
                await conn.add_listener(ops.channel(queue), self._on_notify)
        except Exception as exc:
            conn.terminate()
            log.warning("LISTEN failed; polling", extra={"error": repr(exc)})
            return
        except asyncio.CancelledError:  # close() cancelled the connect
            conn.terminate()
            raise
        if self._closed:  # closed while connecting
            conn.terminate()
            return
        conn.add_termination_listener(self._on_listener_lost)
        self._listener = conn
        self._listener_failed_at = None
        # Notifications sent while no listener was connected are lost: wake everyone.
        for event in self._work.values():
            event.set()

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        event = self._work.get(channel.removeprefix("hookyard_"))
        if event is not None:
            event.set()

    def _on_listener_lost(self, conn: Any) -> None:
        if self._listener is conn:
            self._listener = None
            log.warning("LISTEN connection lost; reconnecting on the next wait")
        for event in self._work.values():
            event.set()

    # --- trigger instances ---------------------------------------------------------

    async def add_trigger_instances(self, batch: Sequence[NewTriggerInstance]) -> list[Accepted]:
        return await self._add_prepared([codec.prepare_trigger_instance(i) for i in batch])

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
        answers, inserted = await self._ingest_transaction(batch)
        self.commit_batches += 1
        self.observe_commit(len(batch), time.perf_counter() - started)
        self.count_ingested(inserted)
        return answers

    def count_ingested(self, stored: int) -> None:
        if stored:
            self._backlog.added(stored)
            self._work["trigger_instances"].set()

    async def pending_backlog(self) -> int:
        return await self._backlog.value()

    def known_backlog(self) -> int | None:
        return self._backlog.known()

    async def _count_pending(self) -> int:
        return await self._read(ops.count_pending)

    async def claim_trigger_instances(
        self, limit: int, lease_seconds: float
    ) -> list[TriggerInstance]:
        claimed = await self._transaction(ops.claim_trigger_instances, limit, lease_seconds)
        self._backlog.claimed(len(claimed))
        return claimed

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
        written = await self._transaction(
            explain_ops.pg_record_enforcements,
            instance_id,
            lease_token,
            outcomes,
            final_status,
            utcnow(),
            evaluations,
        )
        if any(outcome.execution is not None for outcome in outcomes):
            self._work["executions"].set()
        return written

    async def record_decisions(
        self, decisions: Sequence[InstanceDecision]
    ) -> list[list[str] | StoreError]:
        for decision in decisions:
            codec.check_final_status(decision.final_status)
        decisions = sealed_decisions(self.sealer, decisions)
        results = await self._transaction(decision_ops.pg_record_decisions, decisions, utcnow())
        if any(
            not isinstance(result, StoreError) and any(o.execution for o in decision.outcomes)
            for decision, result in zip(decisions, results, strict=True)
        ):
            self._work["executions"].set()
        return results

    async def get_rule_evaluations(self, instance_id: str) -> list[Any] | None:
        return await self._read(explain_ops.pg_get_evaluations, instance_id)

    async def queue_stats(self) -> dict[str, dict[str, float]]:
        return await self._read(explain_ops.pg_queue_stats)

    async def release_trigger_instances(self, leases: Mapping[str, str]) -> None:
        if leases:
            await self._transaction(ops.release_trigger_instances, dict(leases))
            self._backlog.forget()
            self._work["trigger_instances"].set()

    async def get_trigger_instance(self, instance_id: str) -> TriggerInstance:
        return await self._read(ops.get_trigger_instance, instance_id)

    async def list_trigger_instances(
        self, filters: Mapping[str, Any], limit: int, offset: int
    ) -> Page:
        return await self._list(
            "trigger_instances", codec.TRIGGER_INSTANCE_FILTERS, filters, limit, offset
        )

    # --- enforcements ----------------------------------------------------------------

    async def list_enforcements(self, filters: Mapping[str, Any], limit: int, offset: int) -> Page:
        return await self._list("enforcements", codec.ENFORCEMENT_FILTERS, filters, limit, offset)

    # --- executions --------------------------------------------------------------------

    async def create_execution(self, new: NewExecution) -> Execution:
        new = self.sealer.seal_execution(new)

        async def create(conn: asyncpg.Connection) -> Execution:
            await ops.insert_execution(conn, new, utcnow())
            await conn.execute("SELECT pg_notify($1, '')", ops.channel("executions"))
            return await ops.get_execution(conn, new.id)

        execution = await self._transaction(create)
        self._work["executions"].set()
        return execution

    async def claim_executions(
        self, limit: int, lease_seconds: float, max_attempts: int = 2
    ) -> list[Execution]:
        return await self._transaction(
            cancel_ops.pg_claim_executions, limit, lease_seconds, max_attempts, utcnow()
        )

    async def start_execution(self, execution_id: str, lease_token: str) -> Execution:
        return await self._transaction(ops.start_execution, execution_id, lease_token, utcnow())

    async def heartbeat_execution(
        self, execution_id: str, lease_token: str, lease_seconds: float
    ) -> str:
        return await self._transaction(
            ops.heartbeat_execution, execution_id, lease_token, lease_seconds
        )

    async def finish_execution(
        self, execution_id: str, lease_token: str, status: str, result: Any
    ) -> Execution:
        codec.check_terminal_status(status)
        result_json = codec.dumps(result, "execution result")
        return await self._transaction(
            ops.finish_execution, execution_id, lease_token, status, result_json, utcnow()
        )

    async def record_execution_process(
        self, execution_id: str, lease_token: str, process: Mapping[str, Any]
    ) -> None:
        await self._transaction(process_ops.pg_record, execution_id, lease_token, process)

    async def execution_processes(
        self, execution_ids: Sequence[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        return await self._read(process_ops.pg_list, execution_ids)

    async def get_execution(self, execution_id: str) -> Execution:
        return await self._read(ops.get_execution, execution_id)

    async def list_executions(self, filters: Mapping[str, Any], limit: int, offset: int) -> Page:
        return await self._list("executions", codec.EXECUTION_FILTERS, filters, limit, offset)

    # --- API keys ------------------------------------------------------------------------

    async def create_api_key(self, key: ApiKey, *, only_if_none: bool = False) -> bool:
        return await self._transaction(apikey_ops.pg_insert, key, only_if_none)

    async def list_api_keys(self) -> list[ApiKey]:
        return await self._read(apikey_ops.pg_list)

    async def find_api_key(self, prefix: str) -> ApiKey | None:
        return await self._read(apikey_ops.pg_find, prefix)

    async def get_api_key(self, key_id: str) -> ApiKey:
        return await self._read(apikey_ops.pg_get, key_id)

    async def extend_api_key(self, key_id: str, by: timedelta) -> ApiKey:
        return await self._transaction(apikey_ops.pg_extend, key_id, by, utcnow())

    async def set_api_key_enabled(self, key_id: str, enabled: bool) -> ApiKey:
        return await self._transaction(apikey_ops.pg_set_enabled, key_id, enabled)

    async def set_api_key_role(self, key_id: str, role: str, grants: Grants) -> ApiKey:
        return await self._transaction(apikey_ops.pg_set_role, key_id, role, grants)

    async def delete_api_keys(self, key_ids: Sequence[str]) -> list[str]:
        return await self._transaction(apikey_ops.pg_delete, list(key_ids))

    # --- datastore (st2kv) -----------------------------------------------------------------

    async def put_kv(self, pair: KeyValuePair) -> KeyValuePair:
        return await self._transaction(kv_ops.pg_put, pair, utcnow())

    async def get_kv(
        self, name: str, scope: str = SYSTEM_SCOPE, user: str | None = None
    ) -> KeyValuePair:
        return await self._read(kv_ops.pg_get, name, scope, user, utcnow())

    async def list_kv(
        self, prefix: str | None = None, scope: str | None = None, user: str | None = None
    ) -> list[KeyValuePair]:
        return await self._read(kv_ops.pg_list, prefix, scope, user, utcnow())

    async def delete_kv(
        self, name: str, scope: str = SYSTEM_SCOPE, user: str | None = None
    ) -> bool:
        return await self._transaction(kv_ops.pg_delete, name, scope, user, utcnow())

    # --- cancel and API rules ------------------------------------------------------------

    async def request_cancel(self, execution_id: str) -> tuple[Execution, str]:
        return await self._transaction(cancel_ops.pg_request_cancel, execution_id, utcnow())

    async def create_rule(self, ref: str, definition: Mapping[str, Any]) -> StoredRule:
        return await self._transaction(rule_ops.pg_create, ref, definition, utcnow())

    async def replace_rule(self, ref: str, definition: Mapping[str, Any]) -> StoredRule:
        return await self._transaction(rule_ops.pg_replace, ref, definition, utcnow())

    async def delete_rule(self, ref: str) -> None:
        await self._transaction(rule_ops.pg_delete, ref)

    async def list_rules(self) -> list[StoredRule]:
        return await self._read(rule_ops.pg_list)

    async def rules_version(self) -> int:
        return await self._read(rule_ops.pg_version)

    # --- connections and errors -----------------------------------------------------------

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
        return await self._transaction(
            ops.list_rows, table, conditions, limit, offset, isolation="repeatable_read"
        )

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailable(f"{self.where}: the store is not open")
        return self._pool

    async def _transaction(
        self,
        operation: Callable[..., Awaitable[T]],
        *args: Any,
        isolation: str = "read_committed",
    ) -> T:
        pool = self._require_pool()
        with self._translated():
            async with (
                pool.acquire(timeout=self.settings.busy_timeout) as conn,
                conn.transaction(isolation=isolation),
            ):
                return await operation(conn, *args)
        raise AssertionError("unreachable")  # pragma: no cover - for type checkers

    async def _ingest_transaction(
        self, batch: Sequence[tuple[NewTriggerInstance, str]]
    ) -> tuple[list[Accepted], int]:
        # The committer never has more batches in flight than this pool has connections,
        # so acquiring does not wait (and needs no timeout task per batch).
        pool = self._ingest_pool
        if pool is None:
            raise StoreUnavailable(f"{self.where}: the store is not open")
        with self._translated():
            async with pool.acquire() as conn:
                # One round trip when it can be: a single statement needs no BEGIN and
                # COMMIT around it (see ops.insert_trigger_instances_alone for when not).
                answers = None
                if ops.may_insert_alone(batch) and time.monotonic() >= self._subscribed_until:
                    answers = await ops.insert_trigger_instances_alone(conn, batch)
                    if answers is None:
                        # Held back by an enabled subscription: the next batches go
                        # straight to the transaction for a while, rather than send their
                        # rows twice. The statement's guard keeps either choice correct.
                        self._subscribed_until = time.monotonic() + _SUBSCRIBED_RECHECK
                if answers is None:
                    async with conn.transaction():
                        answers = await ops.insert_trigger_instances(conn, batch)
                return answers
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read(self, operation: Callable[..., Awaitable[T]], *args: Any) -> T:
        pool = self._require_pool()
        with self._translated():
            async with pool.acquire(timeout=self.settings.busy_timeout) as conn:
                return await operation(conn, *args)
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except TimeoutError as exc:
            raise StoreBusy(
                f"{self.where}: no database connection free within {self.settings.busy_timeout:g}s",
                retry_after=max(1.0, self.settings.busy_timeout),
            ) from exc
        except asyncpg.exceptions.UniqueViolationError as exc:
            raise Conflict(f"{self.where}: {exc}") from exc
        except _BUSY as exc:
            raise StoreBusy(f"{self.where}: {exc}") from exc
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"{self.where}: {exc}") from exc
        except asyncpg.exceptions.DataError as exc:
            # A value PostgreSQL cannot hold (SQLSTATE class 22): the data is at fault, not
            # the database, and retrying it cannot help.
            raise codec.UnstorableValue(f"{self.where}: {exc}") from exc
        except asyncpg.PostgresError as exc:
            raise StoreError(f"{self.where}: {exc}") from exc
