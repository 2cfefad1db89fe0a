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
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import asyncpg

from engine.config import StoreSettings
from engine.errors import Conflict, StoreBusy, StoreError, StoreUnavailable
from engine.model.records import (
    Accepted,
    NewTriggerInstance,
)
from engine.store import codec
from engine.store.dialect import Dialect
from engine.store.migrations.postgres import MIGRATIONS
from engine.store.ops import (
    apikeys,
    claimers,
    columns,
    decisions,
    deliveries,
    execution_claims,
    executions,
    grouped,
    inquiries,
    instances,
    kv,
    policies,
    policy_retries,
    processes,
    rate_buckets,
    retention,
    rules,
    stream,
    subscriptions,
    workflow_pauses,
    workflows,
)
from engine.store.sql_store import QUEUES, SqlStore

log = logging.getLogger(__name__)

T = TypeVar("T")
# pg_advisory_xact_lock key for migrations: "hookyard" in ASCII.
MIGRATION_LOCK = 0x686F6F6B79617264
CONNECT_TIMEOUT = 10.0
LISTENER_RETRY_SECONDS = 1.0
# Group-commit batches of webhooks in flight at once (each on its own pool connection):
# while one waits for its commit to reach the disk, the next is already being written.
_COMMIT_CONCURRENCY = 3
# Seconds the ingest skips its one-statement insert after an enabled subscription held a
# batch back (instances.pg_insert_alone).
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
# A transaction the database rolled back to break a deadlock or a serialization conflict
# runs again this many times in all before the caller hears StoreBusy.
_ROLLBACK_ATTEMPTS = 3

_BUSY = (
    asyncpg.exceptions.TransactionRollbackError,  # deadlock, serialization failure
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.QueryCanceledError,  # statement timeout
)


# The PostgreSQL operations behind each store method (engine.store.dialect.Dialect).
POSTGRES = Dialect(
    count_pending=instances.pg_count_pending,
    claim_trigger_instances=instances.pg_claim,
    release_trigger_instances=instances.pg_release,
    get_trigger_instance=instances.pg_get,
    list_rows=columns.pg_list_rows,
    record_enforcements=decisions.pg_record_enforcements,
    record_decisions=decisions.pg_record_decisions,
    get_rule_evaluations=decisions.pg_get_evaluations,
    queue_stats=decisions.pg_queue_stats,
    create_execution=executions.pg_create,
    claim_executions=execution_claims.pg_claim,
    start_execution=executions.pg_start,
    heartbeat_execution=executions.pg_heartbeat,
    finish_execution=executions.pg_finish,
    run_grouped=grouped.pg_run_grouped,
    get_execution=executions.pg_get,
    request_cancel=workflows.pg_cancel_tree,
    record_execution_process=processes.pg_record,
    execution_processes=processes.pg_list,
    start_workflow=workflows.pg_start,
    claim_workflow_steps=workflows.pg_claim,
    apply_workflow_step=workflows.pg_apply,
    get_workflow_state=workflows.pg_get_state,
    register_claimer=claimers.pg_register,
    unregister_claimer=claimers.pg_unregister,
    take_over_dead_claims=claimers.pg_take_over,
    request_pause=workflow_pauses.pg_pause,
    request_resume=workflow_pauses.pg_resume,
    open_inquiry=inquiries.pg_open,
    list_inquiries=inquiries.pg_list,
    get_inquiry=inquiries.pg_get,
    respond_inquiry=inquiries.pg_respond,
    expire_inquiries=inquiries.pg_expire,
    create_api_key=apikeys.pg_insert,
    list_api_keys=apikeys.pg_list,
    find_api_key=apikeys.pg_find,
    get_api_key=apikeys.pg_get,
    extend_api_key=apikeys.pg_extend,
    set_api_key_enabled=apikeys.pg_set_enabled,
    set_api_key_role=apikeys.pg_set_role,
    delete_api_keys=apikeys.pg_delete,
    set_api_key_rate=apikeys.pg_set_rate,
    take_rate_tokens=rate_buckets.pg_take,
    put_kv=kv.pg_put,
    get_kv=kv.pg_get,
    list_kv=kv.pg_list,
    delete_kv=kv.pg_delete,
    create_rule=rules.pg_create,
    replace_rule=rules.pg_replace,
    delete_rule=rules.pg_delete,
    list_rules=rules.pg_list,
    rules_version=rules.pg_version,
    insert_subscription=subscriptions.pg_insert,
    get_subscription=subscriptions.pg_get,
    list_subscriptions=subscriptions.pg_list,
    update_subscription=subscriptions.pg_update,
    delete_subscription=subscriptions.pg_delete,
    put_global_subscription=subscriptions.pg_put_global,
    claim_deliveries=deliveries.pg_claim,
    complete_delivery=deliveries.pg_complete,
    release_deliveries=deliveries.pg_release,
    get_delivery=deliveries.pg_get,
    list_deliveries=deliveries.pg_list,
    redeliver=deliveries.pg_redeliver,
    purge=retention.pg_purge,
    recover_deliveries=deliveries.pg_recover,
    take_policy_slots=policies.pg_take_slots,
    delay_execution=policies.pg_delay,
    requeue_delayed=policies.pg_requeue_delayed,
    mark_retry_pending=policy_retries.pg_mark_pending,
    settle_retry=policy_retries.pg_settle,
    pending_retries=policy_retries.pg_pending,
    append_output=stream.pg_append_output,
    list_output=stream.pg_list_output,
    read_feed=stream.pg_read_feed,
    feed_head=stream.pg_feed_head,
    trim_feed=stream.pg_trim_feed,
)


class PostgresStore(SqlStore):
    dialect = POSTGRES
    ingest_concurrency = _COMMIT_CONCURRENCY
    shared_between_processes = True
    grouped_concurrency = _COMMIT_CONCURRENCY

    def __init__(self, url: str, settings: StoreSettings) -> None:
        super().__init__(settings, f"postgresql {codec.redact_url(url)}")
        self.url = url
        self._pool: asyncpg.Pool | None = None
        # The group committer's own connections (see _insert_batch).
        self._ingest_pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        # When the last LISTEN connection attempt failed (reconnects are spaced after failures).
        self._listener_failed_at: float | None = None
        self._connecting: asyncio.Task[None] | None = None
        # Until when ingest writes in a transaction without trying one statement first.
        self._subscribed_until = 0.0

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
        self._start_committer("postgresql group commit", concurrency=_COMMIT_CONCURRENCY)
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
        await self._close_grouped()
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
        self._wake_all()

    async def ping(self) -> None:
        await self._read(lambda conn: conn.fetchval("SELECT 1"))

    # --- wake-up hints ---------------------------------------------------------------

    async def wait_for_work(self, queue: str, timeout: float) -> None:
        self._hint_event(queue)  # an unknown queue fails before any connecting
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
        await self._wait_for_hint(queue, timeout)

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
                await conn.add_listener(columns.channel(queue), self._on_notify)
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
        self._wake_all()

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        event = self._work.get(channel.removeprefix("hookyard_"))
        if event is not None:
            event.set()
            # New trigger instances write change-feed entries but send only their own
            # hint (one NOTIFY less per ingest batch): the stream's readers look on any.
            self._work["stream"].set()

    def _on_listener_lost(self, conn: Any) -> None:
        if self._listener is conn:
            self._listener = None
            log.warning("LISTEN connection lost; reconnecting on the next wait")
        self._wake_all()

    # --- connections and errors -----------------------------------------------------------

    async def _write(self, operation: Callable[..., Awaitable[T]], *args: Any) -> T:
        return await self._transaction(operation, *args)

    async def _read_snapshot(self, operation: Callable[..., Awaitable[T]], *args: Any) -> T:
        return await self._transaction(operation, *args, isolation="repeatable_read")

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
            for attempt in range(1, _ROLLBACK_ATTEMPTS + 1):
                try:
                    async with (
                        pool.acquire(timeout=self.settings.busy_timeout) as conn,
                        conn.transaction(isolation=isolation),
                    ):
                        return await operation(conn, *args)
                except asyncpg.exceptions.TransactionRollbackError:
                    # A deadlock (a workflow's cancel locking parent then children while a
                    # task's end locks child then parent) or a serialization failure: the
                    # database rolled the whole transaction back, so running it again is
                    # safe, and almost always succeeds once the other one has committed.
                    if attempt == _ROLLBACK_ATTEMPTS:
                        raise
                    await asyncio.sleep(random.uniform(0.005, 0.05) * attempt)
        raise AssertionError("unreachable")  # pragma: no cover - for type checkers

    async def _insert_batch(
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
                # COMMIT around it (see instances.pg_insert_alone for when not).
                answers = None
                if (
                    instances.pg_may_insert_alone(batch)
                    and time.monotonic() >= self._subscribed_until
                ):
                    answers = await instances.pg_insert_alone(conn, batch)
                    if answers is None:
                        # Held back by an enabled subscription: the next batches go
                        # straight to the transaction for a while, rather than send their
                        # rows twice. The statement's guard keeps either choice correct.
                        self._subscribed_until = time.monotonic() + _SUBSCRIBED_RECHECK
                if answers is None:
                    async with conn.transaction():
                        answers = await instances.pg_insert(conn, batch)
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
