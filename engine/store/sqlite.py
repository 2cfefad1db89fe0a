"""The embedded store: one SQLite file in WAL mode.

Every write — group-committed trigger instances, claims, enforcements, executions — runs
on one dedicated writer thread holding the one write connection, so this process never
competes with itself for SQLite's write lock (other processes sharing the file wait up to
`busy_timeout`). Reads run on a small pool of reader threads with their own connections;
WAL lets them proceed while the writer commits. The event loop never touches sqlite3.

Durability: WAL with synchronous=NORMAL survives a killed process (a committed
transaction is in the WAL file); an OS crash or power loss may lose the last commits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from engine.config import StoreSettings
from engine.errors import Conflict, StoreBusy, StoreError, StoreUnavailable
from engine.model.records import (
    Accepted,
    NewTriggerInstance,
    utcnow,
)
from engine.store.dialect import Dialect
from engine.store.migrations.sqlite import MIGRATIONS
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
from engine.store.sql_store import SqlStore
from engine.store.sqlite_checkpoint import (
    WAL_SIZE_LIMIT,
    WRITER_AUTOCHECKPOINT_PAGES,
    WalCheckpointer,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
_READER_THREADS = 4

_BUSY_ERRORS = {"SQLITE_BUSY", "SQLITE_LOCKED"}
_BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
# Pauses between a loop write's tries while another connection holds the write lock.
_LOOP_RETRY_FIRST = 0.001
# Group commits up to this many bytes of payload are written on the event loop.
_LOOP_WRITE_MAX_BYTES = 256 * 1024
_LOOP_RETRY_MAX = 0.005
_UNAVAILABLE_PREFIXES = (
    "SQLITE_CANTOPEN",
    "SQLITE_IOERR",
    "SQLITE_READONLY",
    "SQLITE_FULL",
    "SQLITE_CORRUPT",
    "SQLITE_NOTADB",
    "SQLITE_PERM",
)


_WRITABLE_HINT = (
    "the database file, its -wal and -shm files and their folder must be writable by this "
    "user, on a read-write file system, and not immutable (lsattr shows an 'i'; chattr -i)"
)


# The SQLite operations behind each store method (engine.store.dialect.Dialect).
SQLITE = Dialect(
    count_pending=instances.sqlite_count_pending,
    claim_trigger_instances=instances.sqlite_claim,
    release_trigger_instances=instances.sqlite_release,
    get_trigger_instance=instances.sqlite_get,
    list_rows=columns.sqlite_list_rows,
    record_enforcements=decisions.sqlite_record_enforcements,
    record_decisions=decisions.sqlite_record_decisions,
    get_rule_evaluations=decisions.sqlite_get_evaluations,
    queue_stats=decisions.sqlite_queue_stats,
    create_execution=executions.sqlite_create,
    claim_executions=execution_claims.sqlite_claim,
    start_execution=executions.sqlite_start,
    heartbeat_execution=executions.sqlite_heartbeat,
    finish_execution=executions.sqlite_finish,
    run_grouped=grouped.sqlite_run_grouped,
    get_execution=executions.sqlite_get,
    request_cancel=workflows.sqlite_cancel_tree,
    record_execution_process=processes.sqlite_record,
    execution_processes=processes.sqlite_list,
    start_workflow=workflows.sqlite_start,
    claim_workflow_steps=workflows.sqlite_claim,
    apply_workflow_step=workflows.sqlite_apply,
    get_workflow_state=workflows.sqlite_get_state,
    register_claimer=claimers.sqlite_register,
    unregister_claimer=claimers.sqlite_unregister,
    take_over_dead_claims=claimers.sqlite_take_over,
    request_pause=workflow_pauses.sqlite_pause,
    request_resume=workflow_pauses.sqlite_resume,
    open_inquiry=inquiries.sqlite_open,
    list_inquiries=inquiries.sqlite_list,
    get_inquiry=inquiries.sqlite_get,
    respond_inquiry=inquiries.sqlite_respond,
    expire_inquiries=inquiries.sqlite_expire,
    create_api_key=apikeys.sqlite_insert,
    list_api_keys=apikeys.sqlite_list,
    find_api_key=apikeys.sqlite_find,
    get_api_key=apikeys.sqlite_get,
    extend_api_key=apikeys.sqlite_extend,
    set_api_key_enabled=apikeys.sqlite_set_enabled,
    set_api_key_role=apikeys.sqlite_set_role,
    delete_api_keys=apikeys.sqlite_delete,
    set_api_key_rate=apikeys.sqlite_set_rate,
    take_rate_tokens=rate_buckets.sqlite_take,
    put_kv=kv.sqlite_put,
    get_kv=kv.sqlite_get,
    list_kv=kv.sqlite_list,
    delete_kv=kv.sqlite_delete,
    create_rule=rules.sqlite_create,
    replace_rule=rules.sqlite_replace,
    delete_rule=rules.sqlite_delete,
    list_rules=rules.sqlite_list,
    rules_version=rules.sqlite_version,
    insert_subscription=subscriptions.sqlite_insert,
    get_subscription=subscriptions.sqlite_get,
    list_subscriptions=subscriptions.sqlite_list,
    update_subscription=subscriptions.sqlite_update,
    delete_subscription=subscriptions.sqlite_delete,
    put_global_subscription=subscriptions.sqlite_put_global,
    claim_deliveries=deliveries.sqlite_claim,
    complete_delivery=deliveries.sqlite_complete,
    release_deliveries=deliveries.sqlite_release,
    get_delivery=deliveries.sqlite_get,
    list_deliveries=deliveries.sqlite_list,
    redeliver=deliveries.sqlite_redeliver,
    purge=retention.sqlite_purge,
    recover_deliveries=deliveries.sqlite_recover,
    take_policy_slots=policies.sqlite_take_slots,
    delay_execution=policies.sqlite_delay,
    requeue_delayed=policies.sqlite_requeue_delayed,
    mark_retry_pending=policy_retries.sqlite_mark_pending,
    settle_retry=policy_retries.sqlite_settle,
    pending_retries=policy_retries.sqlite_pending,
    append_output=stream.sqlite_append_output,
    list_output=stream.sqlite_list_output,
    read_feed=stream.sqlite_read_feed,
    feed_head=stream.sqlite_feed_head,
    trim_feed=stream.sqlite_trim_feed,
)


def _companions(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


# PRAGMA auto_vacuum's value for INCREMENTAL, and the pages one reclaim_space call frees
# at most (4 KiB each).
_AUTO_VACUUM_INCREMENTAL = 2
RECLAIM_PAGES = 2048


class SqliteStore(SqlStore):
    dialect = SQLITE

    def __init__(self, path: Path, settings: StoreSettings) -> None:
        super().__init__(settings, f"sqlite {path}")
        self.path = path
        self._writer: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._write_conn: sqlite3.Connection | None = None
        # Webhooks' group commits run on the event loop with this connection
        # (`_write_on_loop`).
        self._loop_conn: sqlite3.Connection | None = None
        self._reader_local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_conns_lock = threading.Lock()
        self._checkpoints = WalCheckpointer(self._connect, f"sqlite checkpoint {path.name}")
        # Why the latest write transaction failed (not busy), until one succeeds.
        self._write_failure: str | None = None

    # --- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"sqlite {self.path}: cannot create its folder: {exc}") from exc
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="hookyard-sqlite-writer")
        self._readers = ThreadPoolExecutor(
            _READER_THREADS, thread_name_prefix="hookyard-sqlite-reader"
        )
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._writer, self._open_writer)
        except BaseException:
            await self._shutdown_threads()
            raise
        self._start_committer(f"sqlite group commit {self.path.name}")
        self._checkpoints.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._committer is not None:
            await self._committer.close()
        await self._close_grouped()
        await self._checkpoints.stop()
        await self._shutdown_threads()
        self._wake_all()  # waiters re-check and find the store closed

    async def ping(self) -> None:
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    def write_problem(self) -> str | None:
        # access(2) sees what makes SQLite refuse writes or crash (the immutable flag, a
        # read-only mount: for root too) without writing; a memory-mapped -shm made
        # immutable kills the process with SIGBUS on its next write, so nothing is written.
        for path in (self.path, *_companions(self.path)):
            if path.exists() and not os.access(path, os.W_OK):
                return f"sqlite {path}: not writable ({_WRITABLE_HINT})"
        return self._write_failure

    async def wait_for_work(self, queue: str, timeout: float) -> None:
        # Hints come from this process's own writes (the `_wake` calls of SqlStore).
        await self._wait_for_hint(queue, timeout)

    # --- the backend interface of SqlStore -----------------------------------------

    async def _insert_batch(
        self, batch: Sequence[tuple[NewTriggerInstance, str]]
    ) -> tuple[list[Accepted], int]:
        """One group commit of webhooks, written on the event loop (see `_write_on_loop`)."""
        # A batch of large bodies would hold the loop for as long as it takes to write:
        # above this size it is written by the writer thread instead.
        if sum(len(payload) for _, payload in batch) <= _LOOP_WRITE_MAX_BYTES:
            answer = await self._write_on_loop(instances.sqlite_insert, batch, utcnow())
            self._wake("stream")
            return answer
        return await self._write(instances.sqlite_insert, batch, utcnow())

    async def _read_snapshot(self, operation: Callable[..., T], *args: Any) -> T:
        return await self._read(operation, *args)

    # --- threads and connections ---------------------------------------------------------

    async def _write(self, operation: Callable[..., T], *args: Any) -> T:
        if self._writer is None:
            raise StoreUnavailable(f"sqlite {self.path}: the store is not open")
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._writer, self._in_transaction, operation, args)
        self._checkpoints.wrote()
        # The stream's readers in this process look at the change feed now (other
        # processes' writes, the ingest writer child's included, reach them by polling).
        self._wake("stream")
        return result

    def _in_transaction(self, operation: Callable[..., T], args: tuple[Any, ...]) -> T:
        return self._transaction(self._write_conn, operation, args)

    async def reclaim_space(self, max_pages: int = RECLAIM_PAGES) -> int:
        """Give up to `max_pages` free pages back to the file system (a file made before
        auto_vacuum was set keeps them for reuse instead); returns how many were freed.
        A few hundred pages at a time: the write lock is held while they move."""
        if self._writer is None:
            raise StoreUnavailable(f"sqlite {self.path}: the store is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._incremental_vacuum, max_pages)

    def _incremental_vacuum(self, max_pages: int) -> int:
        conn = self._write_conn
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != _AUTO_VACUUM_INCREMENTAL:
            return 0
        before = conn.execute("PRAGMA freelist_count").fetchone()[0]
        try:
            # executescript steps the pragma to its end; execute() would free nothing.
            conn.executescript(f"PRAGMA incremental_vacuum({int(max_pages)});")
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        return before - conn.execute("PRAGMA freelist_count").fetchone()[0]

    async def _write_on_loop(self, operation: Callable[..., T], *args: Any) -> T:
        """`operation` in a transaction run on the event loop itself, on a connection of
        its own that never waits for a lock — for the webhooks' group commits.

        A group commit takes well under a millisecond; handing it to the writer thread
        cost more than the write (a thread switch per batch, and the two threads taking
        turns at the GIL per statement while the loop is busy). The rules worker's writes
        stay on the writer thread: measured on the loop (bench_ingest, one process), they
        cost ingest a fifth of its throughput. When another connection holds the write
        lock (the writer thread's rules or actions transaction, another process), the write
        is tried again every few milliseconds until busy_timeout: SQLite's own busy
        handler, which the writer thread uses, sleeps up to 100 ms between tries.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.busy_timeout
        pause = _LOOP_RETRY_FIRST
        while True:
            try:
                result = self._transaction(self._loop_conn, operation, args)
            except StoreBusy:
                if loop.time() + pause > deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, _LOOP_RETRY_MAX)
                continue
            self._checkpoints.wrote()
            return result

    def _transaction(
        self, conn: sqlite3.Connection | None, operation: Callable[..., T], args: tuple[Any, ...]
    ) -> T:
        if conn is None:
            raise StoreUnavailable(f"sqlite {self.path}: the store is closed")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = operation(conn, *args)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            error = self._translate(exc)
            if isinstance(error, StoreUnavailable):
                self._write_failure = str(error)
            raise error from exc
        self._write_failure = None
        return result

    async def _read(self, operation: Callable[..., T], *args: Any) -> T:
        if self._readers is None or self._closed:
            raise StoreUnavailable(f"sqlite {self.path}: the store is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._on_reader, operation, args)

    def _on_reader(self, operation: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            conn = getattr(self._reader_local, "conn", None)
            if conn is None:
                conn = self._connect()
                conn.execute("PRAGMA query_only = ON")
                self._reader_local.conn = conn
                with self._reader_conns_lock:
                    self._reader_conns.append(conn)
            return operation(conn, *args)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE on the writer).
        conn = sqlite3.connect(
            self.path,
            timeout=self.settings.busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.settings.busy_timeout * 1000)}")
        return conn

    def _open_writer(self) -> None:
        try:
            conn = self._connect_writer()
            try:
                self._migrate(conn)
                on_loop = self._connect_writer()
            except BaseException:
                conn.close()
                raise
            try:
                # Used on the event loop (`_write_on_loop`): never wait for a lock there,
                # and never checkpoint there either (the writer's safety net does).
                on_loop.execute("PRAGMA busy_timeout = 0")
                on_loop.execute("PRAGMA wal_autocheckpoint = 0")
            except BaseException:
                on_loop.close()
                conn.close()
                raise
        except sqlite3.Error as exc:
            name = getattr(exc, "sqlite_errorname", "") or ""
            if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")):
                raise StoreUnavailable(
                    f"sqlite {self.path}: cannot open the database for writing ({exc}): "
                    f"{_WRITABLE_HINT}"
                ) from exc
            raise StoreUnavailable(f"sqlite {self.path}: cannot open: {exc}") from exc
        self._write_conn = conn
        self._loop_conn = on_loop

    def _connect_writer(self) -> sqlite3.Connection:
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            # Checkpoints run beside the writer (engine.store.sqlite_checkpoint).
            conn.execute(f"PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
            # A new file: pages freed by retention purges can then be given back to the
            # file system (reclaim_space). SQLite allows it only before the first table,
            # and in WAL mode (set already) the VACUUM of the empty file applies it.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("VACUUM")
        # Under the write lock, so two processes opening one new file migrate it once.
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if current > len(MIGRATIONS):
                raise StoreUnavailable(
                    f"sqlite {self.path}: schema version {current} is newer than this"
                    f" Hookyard knows ({len(MIGRATIONS)}); upgrade Hookyard"
                )
            # A write even when there is nothing to migrate: SQLite opens a file it cannot
            # write read-only without a word, and such a store would start, refuse every
            # write, and die of SIGBUS if its -shm could not be written either.
            conn.execute(f"PRAGMA user_version = {current}")
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[version - 1]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version}")
                log.info(
                    "sqlite schema migrated", extra={"path": str(self.path), "version": version}
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    async def _shutdown_threads(self) -> None:
        loop = asyncio.get_running_loop()
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await loop.run_in_executor(writer, self._close_writer)
            writer.shutdown(wait=False)
        if self._readers is not None:
            readers, self._readers = self._readers, None
            await loop.run_in_executor(None, readers.shutdown, True)
            with self._reader_conns_lock:
                for conn in self._reader_conns:
                    conn.close()
                self._reader_conns.clear()

    def _close_writer(self) -> None:
        for conn in (self._write_conn, self._loop_conn):
            if conn is not None:
                conn.close()
        self._write_conn = self._loop_conn = None

    def _translate(self, exc: sqlite3.Error) -> StoreError:
        name = getattr(exc, "sqlite_errorname", "") or ""
        message = f"sqlite {self.path}: {exc}"
        if isinstance(exc, sqlite3.IntegrityError):
            return Conflict(message)
        # Any busy or locked variant (SQLITE_BUSY_RECOVERY, SQLITE_BUSY_SNAPSHOT...): the
        # primary result code is in the low byte.
        primary = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        if name in _BUSY_ERRORS or primary in _BUSY_CODES:
            return StoreBusy(message, retry_after=max(1.0, self.settings.busy_timeout))
        if name.startswith(_UNAVAILABLE_PREFIXES):
            return StoreUnavailable(message)
        return StoreError(message)
