"""The processes that claim work from this store, for both stores.

A process running a claiming role registers itself (`claimers` table: host, boot, pid
namespace, pid and the pid's start time) before it claims anything, and removes its row
when it stops. A process starting up calls `take_over_dead_claims`: in one transaction
that no registration can interleave with, it lists the registered claimers and asks
`is_dead` about each. Rows of dead processes are removed; and when every claimer besides
the caller is dead — and at least one is — no live process holds a lease, so every lease
still held is a dead process's: they are expired at once, and the work is claimed again
now rather than when its lease runs out (up to `workers.lease_seconds`). Fencing is
unchanged: a re-claim gets a new lease token, exactly as after an expiry.

When another claimer is alive, or cannot be judged (it runs on another host, or on a
system without /proc), nothing is expired: its leases may be its own, and they expire as
before. Nor when no dead claimer is found: the leases may then be held by a process that
never registered (one of a version before claimers, during a rolling upgrade).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from engine.store.codec import time_to_text

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg

IsDead = Callable[[Mapping[str, Any]], bool]
_FIELDS = ("host", "boot_id", "pid_namespace", "pid", "pid_start")
# An expired lease is one whose deadline has passed: a second ago is past for every clock
# comparison the claims make (`lease_expires_at < now`, `next_attempt_at <= now`).
_PAST = timedelta(seconds=1)
_ACTIVE_EXECUTIONS = "('scheduled', 'running', 'canceling')"


def _nothing_taken() -> dict[str, int]:
    return {
        "dead_claimers": 0,
        "trigger_instances": 0,
        "executions": 0,
        "deliveries": 0,
        "workflows": 0,
    }


# --- SQLite ------------------------------------------------------------------------------


def sqlite_register(
    conn: sqlite3.Connection, claimer_id: str, record: Mapping[str, Any], now: datetime
) -> None:
    conn.execute(
        "INSERT INTO claimers (id, host, boot_id, pid_namespace, pid, pid_start, started_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (claimer_id, *(record.get(name) for name in _FIELDS), time_to_text(now)),
    )


def sqlite_unregister(conn: sqlite3.Connection, claimer_id: str) -> None:
    conn.execute("DELETE FROM claimers WHERE id = ?", (claimer_id,))


def sqlite_take_over(
    conn: sqlite3.Connection, claimer_id: str, is_dead: IsDead, now: datetime
) -> dict[str, int]:
    # The SQLite writer is one connection in one thread: this transaction is already alone.
    rows = conn.execute(f"SELECT id, {', '.join(_FIELDS)} FROM claimers").fetchall()
    others = [dict(zip(("id", *_FIELDS), row, strict=True)) for row in rows]
    others = [row for row in others if row["id"] != claimer_id]
    dead = [row["id"] for row in others if is_dead(row)]
    taken = _nothing_taken()
    taken["dead_claimers"] = len(dead)
    conn.executemany("DELETE FROM claimers WHERE id = ?", [(i,) for i in dead])
    if not dead or len(dead) < len(others):
        return taken
    past = time_to_text(now - _PAST)
    taken["trigger_instances"] = conn.execute(
        "UPDATE trigger_instances SET lease_expires_at = ?"
        " WHERE status = 'processing' AND lease_expires_at > ?",
        (past, past),
    ).rowcount
    taken["executions"] = conn.execute(
        "UPDATE executions SET lease_expires_at = ?"
        f" WHERE status IN {_ACTIVE_EXECUTIONS} AND lease_token IS NOT NULL"
        " AND lease_expires_at > ?",
        (past, past),
    ).rowcount
    taken["deliveries"] = conn.execute(
        "UPDATE deliveries SET next_attempt_at = ? WHERE status = 'delivering'"
        " AND next_attempt_at > ?",
        (past, past),
    ).rowcount
    taken["workflows"] = conn.execute(
        "UPDATE workflow_runs SET lease_expires_at = ?"
        " WHERE lease_token IS NOT NULL AND lease_expires_at > ?",
        (past, past),
    ).rowcount
    return taken


# --- PostgreSQL --------------------------------------------------------------------------


async def pg_register(
    conn: asyncpg.Connection, claimer_id: str, record: Mapping[str, Any], now: datetime
) -> None:
    # The insert's ROW EXCLUSIVE lock conflicts with the take-over's SHARE ROW EXCLUSIVE: a
    # process registers either before a take-over looks (and is judged alive) or after it.
    await conn.execute(
        "INSERT INTO claimers (id, host, boot_id, pid_namespace, pid, pid_start, started_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, now())",
        claimer_id,
        *(record.get(name) for name in _FIELDS),
    )


async def pg_unregister(conn: asyncpg.Connection, claimer_id: str) -> None:
    await conn.execute("DELETE FROM claimers WHERE id = $1", claimer_id)


async def pg_take_over(
    conn: asyncpg.Connection, claimer_id: str, is_dead: IsDead, now: datetime
) -> dict[str, int]:
    # `now` is unused: leases follow the database's clock, shared by every process.
    await conn.execute("LOCK TABLE claimers IN SHARE ROW EXCLUSIVE MODE")
    rows = await conn.fetch(
        f"SELECT id, {', '.join(_FIELDS)} FROM claimers WHERE id <> $1", claimer_id
    )
    others = [dict(row) for row in rows]
    dead = [row["id"] for row in others if is_dead(row)]
    taken = _nothing_taken()
    taken["dead_claimers"] = len(dead)
    if dead:
        await conn.execute("DELETE FROM claimers WHERE id = ANY($1::text[])", dead)
    if not dead or len(dead) < len(others):
        return taken
    past = "now() - interval '1 second'"
    for table, statement in (
        (
            "trigger_instances",
            f"UPDATE trigger_instances SET lease_expires_at = {past}"
            f" WHERE status = 'processing' AND lease_expires_at > {past}",
        ),
        (
            "executions",
            f"UPDATE executions SET lease_expires_at = {past}"
            f" WHERE status IN {_ACTIVE_EXECUTIONS} AND lease_token IS NOT NULL"
            f" AND lease_expires_at > {past}",
        ),
        (
            "deliveries",
            f"UPDATE deliveries SET next_attempt_at = {past}"
            f" WHERE status = 'delivering' AND next_attempt_at > {past}",
        ),
        (
            "workflows",
            f"UPDATE workflow_runs SET lease_expires_at = {past}"
            f" WHERE lease_token IS NOT NULL AND lease_expires_at > {past}",
        ),
    ):
        status = await conn.execute(statement)
        taken[table] = int(status.rpartition(" ")[2] or 0)
    return taken
