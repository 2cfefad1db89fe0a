"""The store protocol: what the engine needs from a database, named after the domain.

The contract is this class. It is implemented once, by engine.store.sql_store.SqlStore,
over two backends (sqlite.py, postgres.py) that supply their connections and a table of
dialect operations (engine.store.dialect, engine.store.ops); both pass one contract test
suite (tests/integration/test_store_contract.py). Nothing above this package sees a driver
exception: implementations translate them into engine.errors types (StoreError tree).

Queues (trigger instances, executions) are claimed with a lease: a claim sets
`lease_expires_at` and a fresh `lease_token`; an expired lease is claimable again by any
worker; completion is accepted only with the current token (else LeaseLost).
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from engine.errors import StoreError
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
)
from engine.model.roles import Grants
from engine.model.stored_rules import StoredRule
from engine.store.outbound_base import OutboundStore
from engine.store.sealer import ExecutionSealer, NoSealing
from engine.store.stream_base import StreamStore
from engine.store.workflow_base import WorkflowStore


class Store(OutboundStore, StreamStore, WorkflowStore, abc.ABC):
    """Abstract store; see the module docstring for the lease and error contract."""

    # Group commits of webhooks written at once (engine.store.batching): SQLite has one
    # writer; PostgreSQL writes the next batch while the previous one waits for its fsync.
    ingest_concurrency = 1

    # Seals the secret parameters of every execution written (engine.store.sealer).
    sealer: ExecutionSealer = NoSealing()

    def use_sealer(self, sealer: ExecutionSealer) -> None:
        """Write every new execution through `sealer.seal_execution` from now on."""
        self.sealer = sealer

    # Builds the generic trigger instances of an execution ending in a transaction that
    # no action worker's finish_execution makes (engine.process.ended_triggers).
    ended_triggers: Callable[[Execution], Sequence[NewTriggerInstance]] | None = None

    def use_generic_triggers(
        self, source: Callable[[Execution], Sequence[NewTriggerInstance]] | None
    ) -> None:
        """From now on, an execution ended by a workflow step, a cancel before it ran, or
        a claim settling it (canceled, abandoned) stores `source(execution)` with its end."""
        self.ended_triggers = source

    # --- lifecycle ---------------------------------------------------------

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create or migrate the schema to the current version."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush pending group-commit writes, then disconnect."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers now."""

    def write_problem(self) -> str | None:
        """Why writes fail now (for /ready; the text may name files), else None."""
        return None

    def add_commit_observer(self, observer: Callable[[int, float], None]) -> None:
        """Call `observer(batch_size, seconds)` after each committed trigger-instance batch
        (group commit); metrics subscribe here."""
        self.__dict__.setdefault("_commit_observers", []).append(observer)

    def observe_commit(self, size: int, seconds: float) -> None:
        for observer in self.__dict__.get("_commit_observers", ()):
            observer(size, seconds)

    async def wait_for_work(self, queue: str, timeout: float) -> None:
        """Sleep until a wake-up hint for `queue` arrives or `timeout` passes.

        Queues: "trigger_instances", "executions", "deliveries". The default is a plain
        sleep (polling); implementations wake early on new rows (an in-process event for
        SQLite, LISTEN/NOTIFY for PostgreSQL). A hint is only a hint: callers poll anyway.
        """
        await asyncio.sleep(timeout)

    # --- trigger instances ---------------------------------------------------

    @abc.abstractmethod
    async def add_trigger_instances(self, batch: Sequence[NewTriggerInstance]) -> list[Accepted]:
        """Durably store a batch in one transaction; returns one Accepted per item, in order.

        An item whose dedupe_key already exists (or repeats within the batch) is not stored
        again: its Accepted carries the original id and duplicate=True. Enforced by a unique
        constraint, so racing duplicates also resolve to one row.
        """

    @abc.abstractmethod
    async def add_trigger_instance(self, item: NewTriggerInstance) -> Accepted:
        """Store one instance, committed together with concurrent callers' (group commit).

        Returns only after the transaction holding it committed. Raises StoreBusy when the
        writer cannot take it in time.
        """

    @abc.abstractmethod
    def count_ingested(self, stored: int) -> None:
        """`stored` new trigger instances were committed for this process by another one
        (engine.ingest.writer): count them in the backlog, and wake the rules
        worker."""

    @abc.abstractmethod
    async def pending_backlog(self) -> int:
        """Approximate number of pending trigger instances (cheap; used for load shedding)."""

    def known_backlog(self) -> int | None:
        """pending_backlog() when it is known without a query, else None."""
        return None

    @abc.abstractmethod
    async def claim_trigger_instances(
        self, limit: int, lease_seconds: float
    ) -> list[TriggerInstance]:
        """Claim up to `limit` pending (or lease-expired processing) instances, oldest first.

        Claimed rows become `processing` with a new lease; returned with `lease_token`.
        """

    @abc.abstractmethod
    async def record_enforcements(
        self,
        instance_id: str,
        lease_token: str,
        outcomes: Sequence[EnforcementOutcome],
        final_status: str,
        evaluations: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[str]:
        """In one transaction: enforcements, their requested executions, once_per keys,
        the instance's final status (processed | processing_failed) and, when given, the
        candidate rules' evaluation traces (what `get_rule_evaluations` returns).

        An outcome with a once_per_key already remembered for its rule is skipped entirely
        (no enforcement, no execution). Returns the ids of the enforcements written.
        Raises LeaseLost if `lease_token` is no longer the instance's token (nothing written).
        """

    @abc.abstractmethod
    async def record_decisions(
        self, decisions: Sequence[InstanceDecision]
    ) -> list[list[str] | StoreError]:
        """`record_enforcements` for several instances in one transaction, each decision
        all-or-nothing on its own: per decision, in order, the enforcement ids written or
        the error that refused it alone (LeaseLost, NotFound, Conflict, UnstorableValue;
        nothing of it written). A database failure writes nothing and is raised.
        """

    @abc.abstractmethod
    async def get_rule_evaluations(self, instance_id: str) -> list[Any] | None:
        """The evaluations stored with the instance's enforcements; None if none were kept."""

    @abc.abstractmethod
    async def queue_stats(self) -> dict[str, dict[str, float]]:
        """Per queue ("trigger_instances", "executions"): `depth` (items waiting) and
        `oldest_age_seconds` (age of the oldest waiting item, 0 when empty). Cheap."""

    @abc.abstractmethod
    async def release_trigger_instances(self, leases: Mapping[str, str]) -> None:
        """Give claimed instances back (id → lease token) as pending, e.g. on shutdown."""

    @abc.abstractmethod
    async def get_trigger_instance(self, instance_id: str) -> TriggerInstance:
        """Raise NotFound if absent."""

    @abc.abstractmethod
    async def list_trigger_instances(
        self, filters: Mapping[str, Any], limit: int, offset: int
    ) -> Page:
        """Newest first. Filters: trigger, status, webhook, timestamp_gt, timestamp_lt."""

    # --- enforcements ----------------------------------------------------------

    @abc.abstractmethod
    async def list_enforcements(self, filters: Mapping[str, Any], limit: int, offset: int) -> Page:
        """Newest first. Filters: trigger_instance, rule_ref, execution,
        enforced_at_gt, enforced_at_lt."""

    # --- executions ------------------------------------------------------------

    @abc.abstractmethod
    async def create_execution(self, new: NewExecution) -> Execution:
        """Store a requested execution (started by hand or by re-emit), sealed by the
        store's sealer (as are the executions of record_enforcements/record_decisions)."""

    @abc.abstractmethod
    async def claim_executions(
        self,
        limit: int,
        lease_seconds: float,
        max_attempts: int = 2,
        *,
        only_actions: Collection[str] | None = None,
    ) -> list[Execution]:
        """Claim requested executions (status becomes scheduled) and lease-expired
        scheduled/running ones (a worker died), status scheduled; only executions of
        `only_actions` when given. Only an expired running
        one counts as a failed attempt (attempt + 1); a scheduled one never started and
        keeps its attempt.

        An expired running one already at `max_attempts` becomes `abandoned` instead of
        being returned. Returned executions carry lease_token.
        """

    @abc.abstractmethod
    async def start_execution(self, execution_id: str, lease_token: str) -> Execution:
        """Mark running with its start time. LeaseLost on a stale token."""

    @abc.abstractmethod
    async def heartbeat_execution(
        self, execution_id: str, lease_token: str, lease_seconds: float
    ) -> str:
        """Extend the lease of a scheduled, running or canceling execution; returns its
        status (`canceling` tells the worker to stop the run). LeaseLost on a stale token."""

    @abc.abstractmethod
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
        """Record the final status, result and end time (also of a canceling execution).
        LeaseLost on a stale token. `generic(finished)` builds the generic trigger
        instances (engine.model.generic_triggers) stored in the same transaction.
        `start_first`: a scheduled execution whose action ran at once, in the engine
        (`core.noop`), is started in the same transaction (both status changes logged).

        Starts and finishes arriving together may share one transaction; each still
        succeeds or fails (LeaseLost) on its own."""

    @abc.abstractmethod
    async def record_execution_process(
        self, execution_id: str, lease_token: str, process: Mapping[str, Any]
    ) -> None:
        """Remember the OS process the execution's current attempt runs in (a JSON object:
        host, boot id, pid, process group, start time, the worker that started it), so a
        worker re-claiming it after a crash can kill what is left. LeaseLost on a stale
        token or a finished execution."""

    @abc.abstractmethod
    async def execution_processes(
        self, execution_ids: Sequence[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Execution id → its recorded process, for executions not finished yet (scheduled,
        running, canceling) or abandoned that have one; only `execution_ids` when given."""

    # --- claimers: the processes that claim work (engine.store.ops.claimers) ------------

    @abc.abstractmethod
    async def register_claimer(self, claimer_id: str, record: Mapping[str, Any]) -> None:
        """Record a process that is about to claim work: `record` holds host, boot_id,
        pid_namespace, pid and pid_start (engine.workers.claimers)."""

    @abc.abstractmethod
    async def unregister_claimer(self, claimer_id: str) -> None:
        """Forget a claimer that stopped (its leases were released)."""

    @abc.abstractmethod
    async def take_over_dead_claims(
        self, claimer_id: str, is_dead: Callable[[Mapping[str, Any]], bool]
    ) -> dict[str, int]:
        """Forget the registered claimers `is_dead` says are dead; when every claimer but
        `claimer_id` is, expire every lease still held (they are all dead processes'), so
        the work is claimed again now. One transaction no registration interleaves with.
        Returns counts: dead_claimers, trigger_instances, executions, deliveries, workflows."""

    # --- action policies (engine.store.ops.policies) ----------------------------------

    @abc.abstractmethod
    async def take_policy_slots(
        self, execution_id: str, lease_token: str, slots: Sequence[tuple[str, int]]
    ) -> str | None:
        """Atomically take a concurrency slot per (key, threshold) for a scheduled execution
        this worker holds: all of them, or none when one key already has `threshold` active
        holders (that key is returned). A slot frees itself when its execution ends.
        LeaseLost if the execution is no longer this worker's."""

    @abc.abstractmethod
    async def delay_execution(self, execution_id: str, lease_token: str) -> Execution:
        """Set a scheduled execution this worker holds `delayed`, lease dropped."""

    @abc.abstractmethod
    async def requeue_delayed(
        self, action: str | None, limit: int, waited_seconds: float = 0
    ) -> int:
        """Make up to `limit` delayed executions (of `action`, or any) requested again,
        oldest first, those delayed `waited_seconds` ago or longer; returns how many."""

    @abc.abstractmethod
    async def mark_retry_pending(self, original_id: str) -> None:
        """Record that an action.retry policy will re-run `original_id` (before its end is
        recorded); a second mark is a no-op."""

    @abc.abstractmethod
    async def settle_retry(self, original_id: str, new: NewExecution | None) -> bool:
        """Create the retry `new` (None: none after all) and settle the pending mark, in
        one transaction; False, creating nothing, when it was not pending."""

    @abc.abstractmethod
    async def pending_retries(self, limit: int, waited_seconds: float) -> list[Execution]:
        """Ended executions whose retry has been pending `waited_seconds` or longer (their
        worker stopped between recording the end and the retry)."""

    @abc.abstractmethod
    async def get_execution(self, execution_id: str) -> Execution:
        """Raise NotFound if absent."""

    @abc.abstractmethod
    async def list_executions(self, filters: Mapping[str, Any], limit: int, offset: int) -> Page:
        """Newest first. Filters: action, status, trigger_instance, rule, parent (an
        execution id, or "null" for executions without a parent), timestamp_gt,
        timestamp_lt."""

    # --- API keys (only hashes are stored; see engine.model.apikeys) ---------------------------

    @abc.abstractmethod
    async def create_api_key(self, key: ApiKey, *, only_if_none: bool = False) -> bool:
        """Store a key record. With only_if_none, only when no key exists at all (the first
        admin key on start; processes starting together create one). Returns whether it
        was stored. Conflict if the prefix is taken."""

    @abc.abstractmethod
    async def list_api_keys(self) -> list[ApiKey]:
        """Every key record, oldest first."""

    @abc.abstractmethod
    async def find_api_key(self, prefix: str) -> ApiKey | None:
        """The record with this prefix (the caller compares the hash), or None."""

    @abc.abstractmethod
    async def get_api_key(self, key_id: str) -> ApiKey:
        """Raise NotFound if absent."""

    @abc.abstractmethod
    async def extend_api_key(self, key_id: str, by: timedelta) -> ApiKey:
        """Push the expiry `by` further (from now if already expired; never stays never)."""

    @abc.abstractmethod
    async def set_api_key_enabled(self, key_id: str, enabled: bool) -> ApiKey:
        """Enable or disable a key. NotFound if absent."""

    @abc.abstractmethod
    async def set_api_key_role(self, key_id: str, role: str, grants: Grants) -> ApiKey:
        """Give a key another role and grants (checked by the caller). NotFound if absent."""

    @abc.abstractmethod
    async def delete_api_keys(self, key_ids: Sequence[str]) -> list[str]:
        """Delete these keys; returns the ids that existed (and are now gone)."""

    @abc.abstractmethod
    async def set_api_key_rate(self, key_id: str, rate: float, burst: float) -> ApiKey:
        """Set a key's request rate limit (0: none). NotFound if absent."""

    @abc.abstractmethod
    async def take_rate_tokens(
        self, key: str, rate: float, burst: float, want: int
    ) -> tuple[int, float]:
        """Take up to `want` tokens of the shared bucket `key` (refilled at `rate` a second,
        holding at most `burst`): (tokens granted, seconds until one is there when none
        was). engine.store.ops.rate_buckets."""

    # Whether several processes may use this store at once (PostgreSQL): rate limits are
    # then kept in it rather than in each process.
    shared_between_processes: bool = False

    # --- datastore (st2kv key-value pairs; see engine.model.kv) ---------------------------------
    # Scopes are full names (engine.model.kv.SYSTEM_SCOPE / USER_SCOPE); `user` is ignored in the
    # system scope. An expired pair is invisible to every read, as if deleted.

    @abc.abstractmethod
    async def put_kv(self, pair: KeyValuePair) -> KeyValuePair:
        """Create or replace the pair (scope, user, name); returns it as stored. A
        replaced pair keeps its id and created_at; its value, secret flag and expiry
        are the new ones. A secret's value must already be ciphertext."""

    @abc.abstractmethod
    async def get_kv(
        self, name: str, scope: str = SYSTEM_SCOPE, user: str | None = None
    ) -> KeyValuePair:
        """Raise NotFound if absent or expired."""

    @abc.abstractmethod
    async def list_kv(
        self, prefix: str | None = None, scope: str | None = None, user: str | None = None
    ) -> list[KeyValuePair]:
        """Live pairs ordered by scope, user, name (byte order). `scope` None means both;
        `user` narrows the user scope to that user (system pairs stay); `prefix` matches
        the start of names literally."""

    @abc.abstractmethod
    async def delete_kv(
        self, name: str, scope: str = SYSTEM_SCOPE, user: str | None = None
    ) -> bool:
        """Delete the pair; returns whether a live one existed."""

    # --- cancel and rules stored through the API (engine.store.ops.executions, rules) ------

    @abc.abstractmethod
    async def request_cancel(self, execution_id: str) -> tuple[Execution, str]:
        """Cancel an execution: requested/scheduled → canceled at once, running → canceling
        (its worker stops it and records canceled), anything else unchanged. A workflow's
        children that have not ended are canceled alike, down its subworkflows. Returns the
        execution after the request and its status before it. NotFound if absent."""

    @abc.abstractmethod
    async def create_rule(self, ref: str, definition: Mapping[str, Any]) -> StoredRule:
        """Store a new API rule. Conflict if `ref` is stored already."""

    @abc.abstractmethod
    async def replace_rule(self, ref: str, definition: Mapping[str, Any]) -> StoredRule:
        """Replace a stored rule's definition (created_at kept). NotFound if absent."""

    @abc.abstractmethod
    async def delete_rule(self, ref: str) -> None:
        """NotFound if absent."""

    @abc.abstractmethod
    async def list_rules(self) -> list[StoredRule]:
        """Every stored rule, by ref."""

    @abc.abstractmethod
    async def rules_version(self) -> int:
        """A counter every rule write bumps in its transaction (cheap; processes poll it)."""

    # --- retention (engine.store.ops.retention) -----------------------------------------

    @abc.abstractmethod
    async def purge(
        self,
        kind: str,
        before: datetime,
        *,
        limit: int,
        dedupe_before: datetime | None = None,
        dry_run: bool = False,
    ) -> int:
        """Delete up to `limit` finished records of `kind` (engine.store.ops.retention.
        PURGE_KINDS) older than `before`, in one short transaction; returns how many (an
        execution tree counts each of its executions). An instance with a dedupe key is
        kept until `dedupe_before` too. `dry_run`: count all that qualify, delete none."""

    async def reclaim_space(self) -> int:
        """Give space freed by purges back to the file system where the backend does not
        do it itself; returns pages freed. PostgreSQL's autovacuum does: nothing here."""
        return 0
