"""The PostgreSQL store's statements: coroutines of a connection inside a transaction
(insert_trigger_instances_alone is the one that runs outside any).

Claims lock candidate rows with `FOR UPDATE SKIP LOCKED`, so concurrent workers in any
number of processes take disjoint rows without waiting on each other. Lease times use the
database clock (`now()`), so machines with skewed clocks still agree on expiry. JSON goes
in as text cast to jsonb (json for trigger instance payloads) and comes out as text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from engine.errors import LeaseLost, NotFound, StoreError
from engine.model.records import (
    ABANDONED,
    REQUESTED,
    RUNNING,
    SCHEDULED,
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
from engine.outbound import events as outbound_events
from engine.store import codec
from engine.store.codec import Condition, dumps
from engine.store.paging import postgres_page
from engine.store.postgres_outbound import emit

TRIGGER_INSTANCE_COLUMNS = (
    "id, trigger, payload::text AS payload, occurrence_time, status, webhook, dedupe_key,"
    " lease_token, claims"
)
EXECUTION_COLUMNS = (
    "id, action, parameters::text AS parameters, status, result::text AS result,"
    " context::text AS context, created_at, started_at, finished_at, attempt,"
    " log::text AS log, lease_token, lease_expires_at"
)
ENFORCEMENT_COLUMNS = (
    "id, trigger_instance_id, rule_ref, rule_id, status, failure_reason, execution_id,"
    " enforced_at, trace::text AS trace"
)
_NEW_TOKEN = "replace(gen_random_uuid()::text, '-', '')"


def channel(queue: str) -> str:
    return f"hookyard_{queue}"


def _to_time(value: datetime | None) -> datetime | None:
    return None if value is None else codec.as_utc(value)


def _instance(row: asyncpg.Record) -> TriggerInstance:
    return codec.trigger_instance_from_row(row, _to_time)


def _execution(row: asyncpg.Record) -> Execution:
    return codec.execution_from_row(row, _to_time)


def _log_param(status: str, now: datetime) -> str:
    return dumps([codec.log_entry(status, now)])


async def _notify(conn: asyncpg.Connection, queue: str) -> None:
    # Delivered at commit; listeners treat it as a hint to claim now.
    await conn.execute("SELECT pg_notify($1, '')", channel(queue))


# --- trigger instances ---------------------------------------------------------------


# The insert of a batch, in key order: concurrent batches with the same dedupe keys wait,
# not deadlock. {guard} is empty, or the condition that keeps it from inserting anything.
_INSERT_INSTANCES = (
    "WITH ins AS (INSERT INTO trigger_instances (id, trigger, payload, occurrence_time,"
    " status, webhook, dedupe_key) SELECT i, t, p::json, o, 'pending', w, d"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],"
    " $6::text[]) AS u(i, t, p, o, w, d){guard}"
    " ORDER BY d, i"
    " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id),"
    " hint AS (SELECT pg_notify($7, '') FROM (SELECT 1 FROM ins LIMIT 1) AS one)"
)
_SUBSCRIBED = "EXISTS (SELECT 1 FROM subscriptions WHERE enabled)"
# In a transaction: inserts, sends the rules workers' wake-up hint when a row went in,
# and says whether any subscription wants events (which the caller then stores).
_INSERT_IN_TRANSACTION = (
    _INSERT_INSTANCES.format(guard="")
    + f" SELECT ins.id, (SELECT count(*) FROM hint) AS hinted, {_SUBSCRIBED} AS subscribed"
    " FROM ins"
)
# On its own (autocommit): the same, unless a subscription is enabled, in which case it
# inserts nothing and answers one row with subscribed = true. Both EXISTS read the one
# snapshot of the statement, so they agree.
_INSERT_ALONE = (
    _INSERT_INSTANCES.format(guard=f" WHERE NOT {_SUBSCRIBED}")
    + " SELECT ins.id, (SELECT count(*) FROM hint) AS hinted, false AS subscribed FROM ins"
    f" UNION ALL SELECT NULL, 0, true WHERE {_SUBSCRIBED}"
)


async def insert_trigger_instances_alone(
    conn: asyncpg.Connection, batch: Sequence[tuple[NewTriggerInstance, str]]
) -> tuple[list[Accepted], int] | None:
    """Insert a batch in one statement outside any transaction (one round trip instead of
    BEGIN, INSERT and COMMIT), or return None, having written nothing, when the batch has
    to be written in a transaction (insert_trigger_instances):
    - an item has a dedupe key: a duplicate's original is read by a second statement,
      which must not fail after the rows committed (it would queue behind a lock taken in
      between, such as a migration's ALTER TABLE, and the caller be told "not stored");
    - an enabled subscription may want events, which are stored with the rows."""
    if not may_insert_alone(batch):
        return None
    return await _insert_instances(conn, batch, _INSERT_ALONE)


def may_insert_alone(batch: Sequence[tuple[NewTriggerInstance, str]]) -> bool:
    """Whether insert_trigger_instances_alone may write `batch`: none of its items has a
    dedupe key (see there)."""
    return all(item.dedupe_key is None for item, _ in batch)


async def insert_trigger_instances(
    conn: asyncpg.Connection, batch: Sequence[tuple[NewTriggerInstance, str]]
) -> tuple[list[Accepted], int]:
    """Insert a batch and store the events subscriptions want (the caller's transaction)."""
    result = await _insert_instances(conn, batch, _INSERT_IN_TRANSACTION)
    assert result is not None  # only the statement outside a transaction holds back
    return result


async def _insert_instances(
    conn: asyncpg.Connection, batch: Sequence[tuple[NewTriggerInstance, str]], statement: str
) -> tuple[list[Accepted], int] | None:
    first_of = codec.first_occurrences([item for item, _ in batch])
    unique = [
        (index, item, payload)
        for index, (item, payload) in enumerate(batch)
        if first_of[index] == index
    ]
    rows = await conn.fetch(
        statement,
        [item.id for _, item, _ in unique],
        [item.trigger for _, item, _ in unique],
        [payload for _, _, payload in unique],
        [codec.as_utc(item.occurrence_time) for _, item, _ in unique],
        [item.webhook for _, item, _ in unique],
        [item.dedupe_key for _, item, _ in unique],
        channel("trigger_instances"),
    )
    if rows and rows[0]["id"] is None:
        return None  # held back: a subscription is enabled (see _INSERT_ALONE)
    inserted = {row["id"] for row in rows}
    # Rows skipped by ON CONFLICT: answer with the id of the row that holds the key. The
    # conflicting transaction has committed by now (ON CONFLICT waited for it), and this
    # statement's fresh snapshot sees it.
    conflicting = [item.dedupe_key for _, item, _ in unique if item.id not in inserted]
    originals: dict[str, str] = {}
    if conflicting:
        originals = {
            row["dedupe_key"]: row["id"]
            for row in await conn.fetch(
                "SELECT dedupe_key, id FROM trigger_instances WHERE dedupe_key = ANY($1::text[])",
                conflicting,
            )
        }
    stored: dict[int, Accepted] = {}
    for index, item, _ in unique:
        if item.id in inserted:
            stored[index] = Accepted(item.id)
        elif item.dedupe_key in originals:
            stored[index] = Accepted(originals[item.dedupe_key], duplicate=True)
        else:
            # Only a deleted row could do this, and nothing deletes trigger instances.
            raise StoreError(f"trigger instance {item.id}: neither stored nor a duplicate")
    if rows and rows[0]["subscribed"]:
        await emit(conn, utcnow(), lambda: outbound_events.instances_created(batch, inserted))
    return codec.answers_for_batch(first_of, stored), len(inserted)


async def claim_trigger_instances(
    conn: asyncpg.Connection, limit: int, lease_seconds: float, now: datetime
) -> list[TriggerInstance]:
    # `now` is unused: leases follow the database's clock, shared by every process.
    rows = await conn.fetch(
        f"UPDATE trigger_instances SET status = 'processing', lease_token = {_NEW_TOKEN},"
        " lease_expires_at = now() + make_interval(secs => $2), updated_at = now(),"
        " claims = claims + 1"
        " WHERE id IN (SELECT id FROM trigger_instances"
        "  WHERE status IN ('pending', 'processing')"
        "  AND (status = 'pending' OR lease_expires_at < now())"
        "  ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)"
        f" RETURNING {TRIGGER_INSTANCE_COLUMNS}",
        limit,
        float(lease_seconds),
    )
    return sorted((_instance(row) for row in rows), key=lambda ti: ti.id)


async def record_enforcements(
    conn: asyncpg.Connection,
    instance_id: str,
    lease_token: str,
    outcomes: Sequence[EnforcementOutcome],
    final_status: str,
    now: datetime,
) -> list[str]:
    updated = await conn.fetchval(
        "UPDATE trigger_instances SET status = $3, lease_token = NULL, lease_expires_at = NULL,"
        " updated_at = now() WHERE id = $1 AND lease_token = $2 AND status = 'processing'"
        " RETURNING id",
        instance_id,
        lease_token,
        final_status,
    )
    if updated is None:
        raise await _missing_or_lost(conn, "trigger_instances", "trigger instance", instance_id)
    written: list[str] = []
    executions = 0
    for outcome in outcomes:
        if outcome.once_per_key is not None:
            remembered = await conn.fetchval(
                "INSERT INTO once_per_keys (rule_ref, key, trigger_instance_id, created_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1",
                outcome.rule_ref,
                outcome.once_per_key,
                instance_id,
                now,
            )
            if remembered is None:
                continue  # this rule already fired for this key
        execution_id = None
        if outcome.execution is not None:
            await insert_execution(conn, outcome.execution, now, instance_id, outcome.rule_ref)
            execution_id = outcome.execution.id
            executions += 1
        await conn.execute(
            _INSERT_ENFORCEMENT, *_enforcement_row(outcome, instance_id, execution_id, now)
        )
        written.append(outcome.id)
    if executions:
        await _notify(conn, "executions")
    await emit(
        conn,
        now,
        lambda: outbound_events.enforcements_recorded(instance_id, final_status, outcomes, written),
    )
    return written


_INSERT_ENFORCEMENT = (
    "INSERT INTO enforcements (id, trigger_instance_id, rule_ref, rule_id, status,"
    " failure_reason, execution_id, enforced_at, trace)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)"
)
# A trigger instance's evaluation traces (engine.store.explain_ops).
UPSERT_EVALUATIONS = (
    "INSERT INTO rule_evaluations (trigger_instance_id, evaluations, recorded_at)"
    " VALUES ($1, $2::jsonb, $3) ON CONFLICT (trigger_instance_id) DO UPDATE"
    " SET evaluations = excluded.evaluations, recorded_at = excluded.recorded_at"
)


def _enforcement_row(
    outcome: EnforcementOutcome, instance_id: str, execution_id: str | None, now: datetime
) -> tuple[Any, ...]:
    return (
        outcome.id,
        instance_id,
        outcome.rule_ref,
        outcome.rule_id,
        outcome.status,
        outcome.failure_reason,
        execution_id,
        now,
        dumps(outcome.trace, "criteria trace"),
    )


class NotTogether(Exception):
    """A chunk of decisions cannot be written set-wise (a lease lost, an instance gone)."""


async def record_decisions_together(
    conn: asyncpg.Connection, decisions: Sequence[InstanceDecision], now: datetime
) -> list[list[str]]:
    """What record_enforcements and the explain trace write, for a whole chunk of
    decisions without once_per outcomes, in a few statements; NotTogether unless every
    instance's lease is still held (the caller then records them one by one)."""
    finished = await conn.fetch(
        "UPDATE trigger_instances t SET status = r.status, lease_token = NULL,"
        " lease_expires_at = NULL, updated_at = now()"
        " FROM unnest($1::text[], $2::text[], $3::text[]) AS r(id, token, status)"
        " WHERE t.id = r.id AND t.lease_token = r.token AND t.status = 'processing'"
        " RETURNING t.id",
        [d.instance_id for d in decisions],
        [d.lease_token for d in decisions],
        [d.final_status for d in decisions],
    )
    if len(finished) != len(decisions):
        raise NotTogether(f"{len(decisions) - len(finished)} lease(s) lost")
    executions = []
    enforcements = []
    events: list[Any] = []
    for decision in decisions:
        instance_id = decision.instance_id
        for outcome in decision.outcomes:
            execution_id = None
            new = outcome.execution
            if new is not None:
                row = _execution_row(new, now, instance_id, outcome.rule_ref)
                executions.append(row)
                events.append((outbound_events.execution_created, new, row[5], row[6]))
                execution_id = new.id
            enforcements.append(_enforcement_row(outcome, instance_id, execution_id, now))
        written = [outcome.id for outcome in decision.outcomes]
        events.append(
            (
                outbound_events.enforcements_recorded,
                instance_id,
                decision.final_status,
                decision.outcomes,
                written,
            )
        )
    if executions:
        await conn.executemany(_INSERT_EXECUTION, executions)
    if enforcements:
        await conn.executemany(_INSERT_ENFORCEMENT, enforcements)
    traces = [
        (d.instance_id, dumps(list(d.evaluations), "rule evaluations"), now)
        for d in decisions
        if d.evaluations is not None
    ]
    if traces:
        await conn.executemany(UPSERT_EVALUATIONS, traces)
    if executions:
        await _notify(conn, "executions")
    await emit(conn, now, lambda: [e for make, *args in events for e in _as_list(make(*args))])
    return [[outcome.id for outcome in d.outcomes] for d in decisions]


def _as_list(events: Any) -> list[Any]:
    return events if isinstance(events, list) else [events]


async def release_trigger_instances(
    conn: asyncpg.Connection, leases: Mapping[str, str], now: datetime
) -> None:
    # `now` is unused: leases follow the database's clock, shared by every process.
    await conn.execute(
        "UPDATE trigger_instances t SET status = 'pending', lease_token = NULL,"
        " lease_expires_at = NULL, updated_at = now(), claims = greatest(t.claims - 1, 0)"
        " FROM unnest($1::text[], $2::text[]) AS r(id, token)"
        " WHERE t.id = r.id AND t.lease_token = r.token AND t.status = 'processing'",
        list(leases),
        list(leases.values()),
    )
    await _notify(conn, "trigger_instances")


# --- executions ------------------------------------------------------------------------


async def insert_execution(
    conn: asyncpg.Connection,
    new: NewExecution,
    now: datetime,
    instance_id: str | None = None,
    rule_ref: str | None = None,
) -> None:
    row = _execution_row(new, now, instance_id, rule_ref)
    await conn.execute(_INSERT_EXECUTION, *row)
    await emit(conn, now, lambda: [outbound_events.execution_created(new, row[5], row[6])])


_INSERT_EXECUTION = (
    "INSERT INTO executions (id, action, parameters, status, context, trigger_instance_id,"
    " rule_ref, created_at, attempt, log, updated_at)"
    " VALUES ($1, $2, $3::jsonb, $4, $5::jsonb, $6, $7, $8, 1, $9::jsonb, now())"
)


def _execution_row(
    new: NewExecution, now: datetime, instance_id: str | None, rule_ref: str | None
) -> tuple[Any, ...]:
    """_INSERT_EXECUTION's parameters; [5] and [6] are the linked instance and rule."""
    linked_instance, linked_rule = codec.execution_links(new, instance_id, rule_ref)
    return (
        new.id,
        new.action,
        dumps(new.parameters, "execution parameters"),
        REQUESTED,
        dumps(new.context, "execution context"),
        linked_instance,
        linked_rule,
        now,
        _log_param(REQUESTED, now),
    )


async def claim_executions(
    conn: asyncpg.Connection, limit: int, lease_seconds: float, max_attempts: int, now: datetime
) -> list[Execution]:
    # Only an expired `running` execution was a failed attempt (its action may have run);
    # an expired `scheduled` one never started, so it is claimed again at the same attempt.
    abandoned = await conn.fetch(
        "UPDATE executions SET status = $1, finished_at = $2, lease_token = NULL,"
        " lease_expires_at = NULL, updated_at = now(), log = log || $3::jsonb"
        " WHERE id IN (SELECT id FROM executions WHERE status = 'running'"
        "  AND lease_expires_at < now() AND attempt >= $4 FOR UPDATE SKIP LOCKED)"
        f" RETURNING {EXECUTION_COLUMNS}",
        ABANDONED,
        now,
        _log_param(ABANDONED, now),
        max_attempts,
    )
    rows = await conn.fetch(
        "UPDATE executions SET"
        " attempt = CASE WHEN status = 'running' THEN attempt + 1 ELSE attempt END,"
        f" status = $1, lease_token = {_NEW_TOKEN},"
        " lease_expires_at = now() + make_interval(secs => $2), updated_at = now(),"
        " log = log || $3::jsonb"
        " WHERE id IN (SELECT id FROM executions"
        "  WHERE status IN ('requested', 'scheduled', 'running')"
        "  AND (status = 'requested' OR lease_expires_at < now())"
        "  ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)"
        f" RETURNING {EXECUTION_COLUMNS}",
        SCHEDULED,
        float(lease_seconds),
        _log_param(SCHEDULED, now),
        limit,
    )
    if abandoned or rows:
        changed = [*abandoned, *rows]
        await emit(
            conn, now, lambda: [outbound_events.execution_updated(_execution(r)) for r in changed]
        )
    return sorted((_execution(row) for row in rows), key=lambda ex: ex.id)


async def start_execution(
    conn: asyncpg.Connection, execution_id: str, lease_token: str, now: datetime
) -> Execution:
    row = await conn.fetchrow(
        "UPDATE executions SET status = $3, started_at = $4, updated_at = now(),"
        " log = log || $5::jsonb"
        " WHERE id = $1 AND lease_token = $2 AND status = 'scheduled'"
        f" RETURNING {EXECUTION_COLUMNS}",
        execution_id,
        lease_token,
        RUNNING,
        now,
        _log_param(RUNNING, now),
    )
    if row is None:
        raise await _missing_or_lost(conn, "executions", "execution", execution_id)
    execution = _execution(row)
    await emit(conn, now, lambda: [outbound_events.execution_updated(execution)])
    return execution


async def heartbeat_execution(
    conn: asyncpg.Connection,
    execution_id: str,
    lease_token: str,
    lease_seconds: float,
    now: datetime,
) -> str:
    # `now` is unused: leases follow the database's clock, shared by every process.
    status = await conn.fetchval(
        "UPDATE executions SET lease_expires_at = now() + make_interval(secs => $3),"
        " updated_at = now()"
        " WHERE id = $1 AND lease_token = $2 AND status IN ('scheduled', 'running', 'canceling')"
        " RETURNING status",
        execution_id,
        lease_token,
        float(lease_seconds),
    )
    if status is None:
        raise await _missing_or_lost(conn, "executions", "execution", execution_id)
    return status


async def finish_execution(
    conn: asyncpg.Connection,
    execution_id: str,
    lease_token: str,
    status: str,
    result_json: str,
    now: datetime,
) -> Execution:
    row = await conn.fetchrow(
        "UPDATE executions SET status = $3, result = $4::jsonb, finished_at = $5,"
        " lease_token = NULL, lease_expires_at = NULL, updated_at = now(),"
        " log = log || $6::jsonb"
        " WHERE id = $1 AND lease_token = $2 AND status IN ('scheduled', 'running', 'canceling')"
        f" RETURNING {EXECUTION_COLUMNS}",
        execution_id,
        lease_token,
        status,
        result_json,
        now,
        _log_param(status, now),
    )
    if row is None:
        raise await _missing_or_lost(conn, "executions", "execution", execution_id)
    execution = _execution(row)
    await emit(conn, now, lambda: [outbound_events.execution_updated(execution)])
    return execution


async def _missing_or_lost(
    conn: asyncpg.Connection, table: str, what: str, row_id: str
) -> Exception:
    if await conn.fetchval(f"SELECT 1 FROM {table} WHERE id = $1", row_id) is None:
        return NotFound(f"{what} {row_id!r} not found")
    return LeaseLost(
        f"{what} {row_id!r}: the lease token is no longer current"
        " (the lease expired and another worker claimed it, or the work already finished)"
    )


# --- reads -----------------------------------------------------------------------------


async def create_execution(conn: asyncpg.Connection, new: NewExecution, now: datetime) -> Execution:
    await insert_execution(conn, new, now)
    await _notify(conn, "executions")
    return await get_execution(conn, new.id)


async def get_trigger_instance(conn: asyncpg.Connection, instance_id: str) -> TriggerInstance:
    row = await conn.fetchrow(
        f"SELECT {TRIGGER_INSTANCE_COLUMNS} FROM trigger_instances WHERE id = $1", instance_id
    )
    if row is None:
        raise NotFound(f"trigger instance {instance_id!r} not found")
    return _instance(row)


async def get_execution(conn: asyncpg.Connection, execution_id: str) -> Execution:
    row = await conn.fetchrow(
        f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = $1", execution_id
    )
    if row is None:
        raise NotFound(f"execution {execution_id!r} not found")
    return _execution(row)


async def count_pending(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT count(*) FROM trigger_instances WHERE status = 'pending'")


_LISTS = {
    "trigger_instances": (TRIGGER_INSTANCE_COLUMNS, "occurrence_time", _instance),
    "enforcements": (
        ENFORCEMENT_COLUMNS,
        "enforced_at",
        lambda row: codec.enforcement_from_row(row, _to_time),
    ),
    "executions": (EXECUTION_COLUMNS, "created_at", _execution),
}


async def list_rows(
    conn: asyncpg.Connection,
    table: str,
    conditions: Sequence[Condition],
    limit: int,
    offset: int,
) -> Page:
    """One page of a listed table (trigger instances, enforcements, executions)."""
    columns, time_column, to_record = _LISTS[table]
    return await postgres_page(
        conn, table, columns, f"{time_column} DESC, id DESC", to_record, conditions, limit, offset
    )
