"""The SQLite store's statements: plain functions of a connection, run on its threads.

Write functions run inside the one writer thread's `BEGIN IMMEDIATE` transaction (see
sqlite.py), so a read-then-write in here cannot interleave with another writer of this
process, and other processes wait on SQLite's file lock. Raising rolls back.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from engine.errors import LeaseLost, NotFound
from engine.model.records import (
    ABANDONED,
    REQUESTED,
    RUNNING,
    SCHEDULED,
    Accepted,
    Enforcement,
    EnforcementOutcome,
    Execution,
    NewExecution,
    NewTriggerInstance,
    Page,
    TriggerInstance,
)
from engine.outbound import events as outbound_events
from engine.store import codec
from engine.store.codec import Condition, dumps, time_from_text, time_to_text
from engine.store.paging import sqlite_page
from engine.store.sqlite_outbound import emit

TRIGGER_INSTANCE_COLUMNS = (
    "id, trigger, payload, occurrence_time, status, webhook, dedupe_key, lease_token, claims"
)
EXECUTION_COLUMNS = (
    "id, action, parameters, status, result, context, created_at, started_at, finished_at,"
    " attempt, log, lease_token, lease_expires_at"
)
ENFORCEMENT_COLUMNS = (
    "id, trigger_instance_id, rule_ref, rule_id, status, failure_reason, execution_id,"
    " enforced_at, trace"
)
_APPEND_LOG = "log = json_insert(log, '$[#]', json(?))"
_KEY_CHUNK = 500  # keeps IN (...) lists well under SQLite's variable limit


def _instance(row: sqlite3.Row) -> TriggerInstance:
    return codec.trigger_instance_from_row(row, time_from_text)


def _execution(row: sqlite3.Row) -> Execution:
    return codec.execution_from_row(row, time_from_text)


def _enforcement(row: sqlite3.Row) -> Enforcement:
    return codec.enforcement_from_row(row, time_from_text)


def _log_param(status: str, now: datetime) -> str:
    return dumps(codec.log_entry(status, now))


# --- trigger instances ---------------------------------------------------------------


# One INSERT statement per up to this many rows (7 parameters each, under SQLite's oldest
# limit of 999): one statement step per batch instead of one per row.
_ROWS_PER_INSERT = 128


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_instances_sql(rows: int) -> str:
    values = ",".join(["(?, ?, ?, ?, 'pending', ?, ?, ?)"] * rows)
    return (
        "INSERT INTO trigger_instances (id, trigger, payload, occurrence_time, status,"
        f" webhook, dedupe_key, updated_at) VALUES {values}"
    )


def insert_trigger_instances(
    conn: sqlite3.Connection, batch: Sequence[tuple[NewTriggerInstance, str]], now: datetime
) -> tuple[list[Accepted], int]:
    """Insert a batch (item, payload JSON); returns the answers and the number inserted."""
    first_of = codec.first_occurrences([item for item, _ in batch])
    keys = [
        item.dedupe_key
        for index, (item, _) in enumerate(batch)
        if first_of[index] == index and item.dedupe_key is not None
    ]
    existing: dict[str, str] = {}
    for start in range(0, len(keys), _KEY_CHUNK):
        chunk = keys[start : start + _KEY_CHUNK]
        marks = ",".join("?" * len(chunk))
        existing.update(
            conn.execute(
                f"SELECT dedupe_key, id FROM trigger_instances WHERE dedupe_key IN ({marks})",
                chunk,
            ).fetchall()
        )
    stored: dict[int, Accepted] = {}
    rows = []
    updated_at = time_to_text(now)
    for index, (item, payload) in enumerate(batch):
        if first_of[index] != index:
            continue
        if item.dedupe_key is not None and item.dedupe_key in existing:
            stored[index] = Accepted(existing[item.dedupe_key], duplicate=True)
            continue
        occurred = time_to_text(item.occurrence_time)
        rows.append(
            (item.id, item.trigger, payload, occurred, item.webhook, item.dedupe_key, updated_at)
        )
        stored[index] = Accepted(item.id)
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        conn.execute(_insert_instances_sql(len(chunk)), [v for row in chunk for v in row])
    if rows:
        stored_ids = {row[0] for row in rows}
        emit(conn, now, lambda: outbound_events.instances_created(batch, stored_ids))
    return codec.answers_for_batch(first_of, stored), len(rows)


def claim_trigger_instances(
    conn: sqlite3.Connection, limit: int, lease_seconds: float, now: datetime
) -> list[TriggerInstance]:
    expires = time_to_text(now + timedelta(seconds=lease_seconds))
    rows = conn.execute(
        "UPDATE trigger_instances SET status = 'processing', claims = claims + 1,"
        " lease_token = lower(hex(randomblob(16))), lease_expires_at = ?, updated_at = ?"
        " WHERE id IN (SELECT id FROM trigger_instances INDEXED BY trigger_instances_active"
        "  WHERE status IN ('pending', 'processing')"
        "  AND (status = 'pending' OR lease_expires_at < ?) ORDER BY id LIMIT ?)"
        f" RETURNING {TRIGGER_INSTANCE_COLUMNS}",
        (expires, time_to_text(now), time_to_text(now), limit),
    ).fetchall()
    return sorted((_instance(row) for row in rows), key=lambda ti: ti.id)


def record_enforcements(
    conn: sqlite3.Connection,
    instance_id: str,
    lease_token: str,
    outcomes: Sequence[EnforcementOutcome],
    final_status: str,
    now: datetime,
) -> tuple[list[str], int]:
    """Returns the enforcement ids written and the number of executions requested."""
    at = time_to_text(now)
    cursor = conn.execute(
        "UPDATE trigger_instances SET status = ?, lease_token = NULL, lease_expires_at = NULL,"
        " updated_at = ? WHERE id = ? AND lease_token = ? AND status = 'processing'",
        (final_status, at, instance_id, lease_token),
    )
    if cursor.rowcount == 0:
        raise _missing_or_lost(conn, "trigger_instances", "trigger instance", instance_id)
    written: list[str] = []
    executions = 0
    for outcome in outcomes:
        if outcome.once_per_key is not None:
            cursor = conn.execute(
                "INSERT INTO once_per_keys (rule_ref, key, trigger_instance_id, created_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (outcome.rule_ref, outcome.once_per_key, instance_id, at),
            )
            if cursor.rowcount == 0:
                continue  # this rule already fired for this key
        execution_id = None
        if outcome.execution is not None:
            insert_execution(conn, outcome.execution, now, instance_id, outcome.rule_ref)
            execution_id = outcome.execution.id
            executions += 1
        conn.execute(
            f"INSERT INTO enforcements ({ENFORCEMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                outcome.id,
                instance_id,
                outcome.rule_ref,
                outcome.rule_id,
                outcome.status,
                outcome.failure_reason,
                execution_id,
                at,
                dumps(outcome.trace, "criteria trace"),
            ),
        )
        written.append(outcome.id)
    emit(
        conn,
        now,
        lambda: outbound_events.enforcements_recorded(instance_id, final_status, outcomes, written),
    )
    return written, executions


def release_trigger_instances(
    conn: sqlite3.Connection, leases: Mapping[str, str], now: datetime
) -> None:
    conn.executemany(
        "UPDATE trigger_instances SET status = 'pending', lease_token = NULL,"
        " lease_expires_at = NULL, updated_at = ?, claims = max(claims - 1, 0)"
        " WHERE id = ? AND lease_token = ? AND status = 'processing'",
        [(time_to_text(now), iid, token) for iid, token in leases.items()],
    )


# --- executions ------------------------------------------------------------------------


def insert_execution(
    conn: sqlite3.Connection,
    new: NewExecution,
    now: datetime,
    instance_id: str | None = None,
    rule_ref: str | None = None,
) -> None:
    linked_instance, linked_rule = codec.execution_links(new, instance_id, rule_ref)
    at = time_to_text(now)
    conn.execute(
        "INSERT INTO executions (id, action, parameters, status, context, trigger_instance_id,"
        " rule_ref, created_at, attempt, log, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
        (
            new.id,
            new.action,
            dumps(new.parameters, "execution parameters"),
            REQUESTED,
            dumps(new.context, "execution context"),
            linked_instance,
            linked_rule,
            at,
            dumps([codec.log_entry(REQUESTED, now)]),
            at,
        ),
    )
    emit(conn, now, lambda: [outbound_events.execution_created(new, linked_instance, linked_rule)])


def claim_executions(
    conn: sqlite3.Connection, limit: int, lease_seconds: float, max_attempts: int, now: datetime
) -> list[Execution]:
    at = time_to_text(now)
    active = (
        "SELECT id FROM executions INDEXED BY executions_active"
        " WHERE status IN ('requested', 'scheduled', 'running')"
    )
    # Only an expired `running` execution was a failed attempt (its action may have run);
    # an expired `scheduled` one never started, so it is claimed again at the same attempt.
    abandoned = conn.execute(
        f"UPDATE executions SET status = ?, finished_at = ?, lease_token = NULL,"
        f" lease_expires_at = NULL, updated_at = ?, {_APPEND_LOG}"
        f" WHERE id IN ({active} AND status = 'running' AND lease_expires_at < ?"
        "  AND attempt >= ?)"
        f" RETURNING {EXECUTION_COLUMNS}",
        (ABANDONED, at, at, _log_param(ABANDONED, now), at, max_attempts),
    ).fetchall()
    rows = conn.execute(
        "UPDATE executions SET"
        " attempt = CASE WHEN status = 'running' THEN attempt + 1 ELSE attempt END,"
        " status = ?, lease_token = lower(hex(randomblob(16))), lease_expires_at = ?,"
        f" updated_at = ?, {_APPEND_LOG}"
        f" WHERE id IN ({active} AND (status = 'requested' OR lease_expires_at < ?)"
        "  ORDER BY id LIMIT ?)"
        f" RETURNING {EXECUTION_COLUMNS}",
        (
            SCHEDULED,
            time_to_text(now + timedelta(seconds=lease_seconds)),
            at,
            _log_param(SCHEDULED, now),
            at,
            limit,
        ),
    ).fetchall()
    if abandoned or rows:
        changed = [*abandoned, *rows]
        emit(conn, now, lambda: [outbound_events.execution_updated(_execution(r)) for r in changed])
    return sorted((_execution(row) for row in rows), key=lambda ex: ex.id)


def start_execution(
    conn: sqlite3.Connection, execution_id: str, lease_token: str, now: datetime
) -> Execution:
    at = time_to_text(now)
    row = conn.execute(
        f"UPDATE executions SET status = ?, started_at = ?, updated_at = ?, {_APPEND_LOG}"
        " WHERE id = ? AND lease_token = ? AND status = 'scheduled'"
        f" RETURNING {EXECUTION_COLUMNS}",
        (RUNNING, at, at, _log_param(RUNNING, now), execution_id, lease_token),
    ).fetchone()
    if row is None:
        raise _missing_or_lost(conn, "executions", "execution", execution_id)
    execution = _execution(row)
    emit(conn, now, lambda: [outbound_events.execution_updated(execution)])
    return execution


def heartbeat_execution(
    conn: sqlite3.Connection,
    execution_id: str,
    lease_token: str,
    lease_seconds: float,
    now: datetime,
) -> str:
    row = conn.execute(
        "UPDATE executions SET lease_expires_at = ?, updated_at = ?"
        " WHERE id = ? AND lease_token = ? AND status IN ('scheduled', 'running', 'canceling')"
        " RETURNING status",
        (
            time_to_text(now + timedelta(seconds=lease_seconds)),
            time_to_text(now),
            execution_id,
            lease_token,
        ),
    ).fetchone()
    if row is None:
        raise _missing_or_lost(conn, "executions", "execution", execution_id)
    return row["status"]


def finish_execution(
    conn: sqlite3.Connection,
    execution_id: str,
    lease_token: str,
    status: str,
    result_json: str,
    now: datetime,
) -> Execution:
    at = time_to_text(now)
    row = conn.execute(
        "UPDATE executions SET status = ?, result = ?, finished_at = ?, lease_token = NULL,"
        f" lease_expires_at = NULL, updated_at = ?, {_APPEND_LOG}"
        " WHERE id = ? AND lease_token = ? AND status IN ('scheduled', 'running', 'canceling')"
        f" RETURNING {EXECUTION_COLUMNS}",
        (status, result_json, at, at, _log_param(status, now), execution_id, lease_token),
    ).fetchone()
    if row is None:
        raise _missing_or_lost(conn, "executions", "execution", execution_id)
    execution = _execution(row)
    emit(conn, now, lambda: [outbound_events.execution_updated(execution)])
    return execution


def _missing_or_lost(conn: sqlite3.Connection, table: str, what: str, row_id: str) -> Exception:
    if conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (row_id,)).fetchone() is None:
        return NotFound(f"{what} {row_id!r} not found")
    return LeaseLost(
        f"{what} {row_id!r}: the lease token is no longer current"
        " (the lease expired and another worker claimed it, or the work already finished)"
    )


# --- reads -----------------------------------------------------------------------------


def create_execution(conn: sqlite3.Connection, new: NewExecution, now: datetime) -> Execution:
    insert_execution(conn, new, now)
    return get_execution(conn, new.id)


def get_trigger_instance(conn: sqlite3.Connection, instance_id: str) -> TriggerInstance:
    row = conn.execute(
        f"SELECT {TRIGGER_INSTANCE_COLUMNS} FROM trigger_instances WHERE id = ?",
        (instance_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"trigger instance {instance_id!r} not found")
    return _instance(row)


def get_execution(conn: sqlite3.Connection, execution_id: str) -> Execution:
    row = conn.execute(
        f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = ?", (execution_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"execution {execution_id!r} not found")
    return _execution(row)


def count_pending(conn: sqlite3.Connection) -> int:
    return conn.execute(
        "SELECT count(*) FROM trigger_instances WHERE status = 'pending'"
    ).fetchone()[0]


_LISTS = {
    "trigger_instances": (TRIGGER_INSTANCE_COLUMNS, "occurrence_time", _instance),
    "enforcements": (ENFORCEMENT_COLUMNS, "enforced_at", _enforcement),
    "executions": (EXECUTION_COLUMNS, "created_at", _execution),
}


def list_rows(
    conn: sqlite3.Connection,
    table: str,
    conditions: Sequence[Condition],
    limit: int,
    offset: int,
) -> Page:
    """One page of a listed table (trigger instances, enforcements, executions)."""
    columns, time_column, to_record = _LISTS[table]
    return sqlite_page(
        conn, table, columns, f"{time_column} DESC, id DESC", to_record, conditions, limit, offset
    )
