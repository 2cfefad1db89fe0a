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
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

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
from engine.store import sqlite_ops as ops
from engine.store.backlog import BacklogGauge
from engine.store.base import Store
from engine.store.batching import GroupCommitter
from engine.store.migrations.sqlite import MIGRATIONS
from engine.store.sealer import sealed_decisions, sealed_outcomes
from engine.store.sqlite_checkpoint import (
    WAL_SIZE_LIMIT,
    WRITER_AUTOCHECKPOINT_PAGES,
    WalCheckpointer,
)
from engine.store.sqlite_outbound import SqliteOutbound

log = logging.getLogger(__name__)

T = TypeVar("T")
QUEUES = ("trigger_instances", "executions", "deliveries")
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


def _companions(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


class SqliteStore(SqliteOutbound, Store):
    def __init__(self, path: Path, settings: StoreSettings) -> None:
        self.path = path
        self.settings = settings
        # Committed add_trigger_instances transactions (tests and metrics read it).
        self.commit_batches = 0
        self._writer: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._write_conn: sqlite3.Connection | None = None
        # Webhooks' group commits run on the event loop with this connection
        # (`_write_on_loop`).
        self._loop_conn: sqlite3.Connection | None = None
        self._reader_local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_conns_lock = threading.Lock()
        self._committer: GroupCommitter[tuple[NewTriggerInstance, str], Accepted] | None = None
        self._work = {queue: asyncio.Event() for queue in QUEUES}
        self._backlog = BacklogGauge(self._count_pending)
        self._checkpoints = WalCheckpointer(self._connect, f"sqlite checkpoint {path.name}")
        self._closed = False
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
        self._committer = GroupCommitter(
            self._add_prepared,
            batch_max=self.settings.batch_max,
            timeout=self.settings.busy_timeout,
            name=f"sqlite group commit {self.path.name}",
        )
        self._committer.start()
        self._checkpoints.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._committer is not None:
            await self._committer.close()
        await self._checkpoints.stop()
        await self._shutdown_threads()
        for event in self._work.values():
            event.set()  # waiters re-check and find the store closed

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
        event = self._work.get(queue)
        if event is None:
            raise StoreError(f"unknown queue {queue!r}; known: {', '.join(QUEUES)}")
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        # Cleared only after waking, so a hint set between a claim and this wait is kept.
        event.clear()

    # --- trigger instances ---------------------------------------------------------

    async def add_trigger_instances(self, batch: Sequence[NewTriggerInstance]) -> list[Accepted]:
        return await self._add_prepared([codec.prepare_trigger_instance(item) for item in batch])

    async def add_trigger_instance(self, item: NewTriggerInstance) -> Accepted:
        if self._committer is None:
            raise StoreUnavailable(f"sqlite {self.path}: the store is not open")
        return await self._committer.enqueue(codec.prepare_trigger_instance(item))

    async def _add_prepared(
        self, batch: Sequence[tuple[NewTriggerInstance, str]]
    ) -> list[Accepted]:
        """One group commit of webhooks, written on the event loop (see `_write_on_loop`)."""
        if not batch:
            return []
        started = time.perf_counter()
        # A batch of large bodies would hold the loop for as long as it takes to write:
        # above this size it is written by the writer thread instead.
        if sum(len(payload) for _, payload in batch) <= _LOOP_WRITE_MAX_BYTES:
            write = self._write_on_loop
        else:
            write = self._write
        answers, inserted = await write(ops.insert_trigger_instances, batch, utcnow())
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
        claimed = await self._write(ops.claim_trigger_instances, limit, lease_seconds, utcnow())
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
        written, executions = await self._write(
            explain_ops.sqlite_record_enforcements,
            instance_id,
            lease_token,
            outcomes,
            final_status,
            utcnow(),
            evaluations,
        )
        if executions:
            self._work["executions"].set()
        return written

    async def record_decisions(
        self, decisions: Sequence[InstanceDecision]
    ) -> list[list[str] | StoreError]:
        for decision in decisions:
            codec.check_final_status(decision.final_status)
        decisions = sealed_decisions(self.sealer, decisions)
        results, executions = await self._write(
            decision_ops.sqlite_record_decisions, decisions, utcnow()
        )
        if executions:
            self._work["executions"].set()
        return results

    async def get_rule_evaluations(self, instance_id: str) -> list[Any] | None:
        return await self._read(explain_ops.sqlite_get_evaluations, instance_id)

    async def queue_stats(self) -> dict[str, dict[str, float]]:
        return await self._read(explain_ops.sqlite_queue_stats)

    async def release_trigger_instances(self, leases: Mapping[str, str]) -> None:
        if leases:
            await self._write(ops.release_trigger_instances, dict(leases), utcnow())
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
        await self._write(ops.insert_execution, new, utcnow())
        self._work["executions"].set()
        return await self._read(ops.get_execution, new.id)

    async def claim_executions(
        self, limit: int, lease_seconds: float, max_attempts: int = 2
    ) -> list[Execution]:
        return await self._write(
            cancel_ops.sqlite_claim_executions, limit, lease_seconds, max_attempts, utcnow()
        )

    async def start_execution(self, execution_id: str, lease_token: str) -> Execution:
        return await self._write(ops.start_execution, execution_id, lease_token, utcnow())

    async def heartbeat_execution(
        self, execution_id: str, lease_token: str, lease_seconds: float
    ) -> str:
        return await self._write(
            ops.heartbeat_execution, execution_id, lease_token, lease_seconds, utcnow()
        )

    async def finish_execution(
        self, execution_id: str, lease_token: str, status: str, result: Any
    ) -> Execution:
        codec.check_terminal_status(status)
        result_json = codec.dumps(result, "execution result")
        return await self._write(
            ops.finish_execution, execution_id, lease_token, status, result_json, utcnow()
        )

    async def record_execution_process(
        self, execution_id: str, lease_token: str, process: Mapping[str, Any]
    ) -> None:
        await self._write(process_ops.sqlite_record, execution_id, lease_token, process)

    async def execution_processes(
        self, execution_ids: Sequence[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        return await self._read(process_ops.sqlite_list, execution_ids)

    async def get_execution(self, execution_id: str) -> Execution:
        return await self._read(ops.get_execution, execution_id)

    async def list_executions(self, filters: Mapping[str, Any], limit: int, offset: int) -> Page:
        return await self._list("executions", codec.EXECUTION_FILTERS, filters, limit, offset)

    # --- API keys ------------------------------------------------------------------------

    async def create_api_key(self, key: ApiKey, *, only_if_none: bool = False) -> bool:
        return await self._write(apikey_ops.sqlite_insert, key, only_if_none)

    async def list_api_keys(self) -> list[ApiKey]:
        return await self._read(apikey_ops.sqlite_list)

    async def find_api_key(self, prefix: str) -> ApiKey | None:
        return await self._read(apikey_ops.sqlite_find, prefix)

    async def get_api_key(self, key_id: str) -> ApiKey:
        return await self._read(apikey_ops.sqlite_get, key_id)

    async def extend_api_key(self, key_id: str, by: timedelta) -> ApiKey:
        return await self._write(apikey_ops.sqlite_extend, key_id, by, utcnow())

    async def set_api_key_enabled(self, key_id: str, enabled: bool) -> ApiKey:
        return await self._write(apikey_ops.sqlite_set_enabled, key_id, enabled)

    async def set_api_key_role(self, key_id: str, role: str, grants: Grants) -> ApiKey:
        return await self._write(apikey_ops.sqlite_set_role, key_id, role, grants)

    async def delete_api_keys(self, key_ids: Sequence[str]) -> list[str]:
        return await self._write(apikey_ops.sqlite_delete, list(key_ids))

    # --- datastore (st2kv) -----------------------------------------------------------------

    async def put_kv(self, pair: KeyValuePair) -> KeyValuePair:
        return await self._write(kv_ops.sqlite_put, pair, utcnow())

    async def get_kv(
        self, name: str, scope: str = SYSTEM_SCOPE, user: str | None = None
    ) -> KeyValuePair:
        return await self._read(kv_ops.sqlite_get, name, scope, user, utcnow())

    async def list_kv(
        self, prefix: str | None = None, scope: str | None = None, user: str | None = None
    ) -> list[KeyValuePair]:
        return await self._read(kv_ops.sqlite_list, prefix, scope, user, utcnow())

    async def delete_kv(
        self, name: str, scope: str = SYSTEM_SCOPE, user: str | None = None
    ) -> bool:
        return await self._write(kv_ops.sqlite_delete, name, scope, user, utcnow())

    # --- cancel and API rules ------------------------------------------------------------

    async def request_cancel(self, execution_id: str) -> tuple[Execution, str]:
        return await self._write(cancel_ops.sqlite_request_cancel, execution_id, utcnow())

    async def create_rule(self, ref: str, definition: Mapping[str, Any]) -> StoredRule:
        return await self._write(rule_ops.sqlite_create, ref, definition, utcnow())

    async def replace_rule(self, ref: str, definition: Mapping[str, Any]) -> StoredRule:
        return await self._write(rule_ops.sqlite_replace, ref, definition, utcnow())

    async def delete_rule(self, ref: str) -> None:
        await self._write(rule_ops.sqlite_delete, ref)

    async def list_rules(self) -> list[StoredRule]:
        return await self._read(rule_ops.sqlite_list)

    async def rules_version(self) -> int:
        return await self._read(rule_ops.sqlite_version)

    # --- threads and connections ---------------------------------------------------------

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
        return await self._read(ops.list_rows, table, conditions, limit, offset)

    async def _write(self, operation: Callable[..., T], *args: Any) -> T:
        if self._writer is None:
            raise StoreUnavailable(f"sqlite {self.path}: the store is not open")
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._writer, self._in_transaction, operation, args)
        self._checkpoints.wrote()
        return result

    def _in_transaction(self, operation: Callable[..., T], args: tuple[Any, ...]) -> T:
        return self._transaction(self._write_conn, operation, args)

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
