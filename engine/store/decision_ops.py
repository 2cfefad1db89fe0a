"""Record the rules worker's decisions for several trigger instances in one transaction.

Each decision is all-or-nothing on its own, inside a savepoint: a decision whose lease
was lost (or whose instance is gone, or whose data cannot be stored) is rolled back alone
and its error is returned in its place, so one stale instance never blocks the others.
Anything else (the database failing) rolls the whole transaction back and is raised.
The outbound events and explain traces of a decision are written by the same calls as
for a single instance (explain_ops), so they stay in its savepoint.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from engine.errors import Conflict, LeaseLost, NotFound, StoreError
from engine.model.records import InstanceDecision
from engine.store import explain_ops, postgres_ops
from engine.store.codec import UnstorableValue

# Errors that belong to one decision, not to the database.
DECISION_ERRORS = (LeaseLost, NotFound, Conflict, UnstorableValue)

Outcome = list[str] | StoreError


def sqlite_record_decisions(
    conn: sqlite3.Connection, decisions: Sequence[InstanceDecision], now: datetime
) -> tuple[list[Outcome], int]:
    """(per decision: enforcement ids written or its error, executions requested)."""
    results: list[Outcome] = []
    executions = 0
    for decision in decisions:
        conn.execute("SAVEPOINT decision")
        try:
            written, requested = explain_ops.sqlite_record_enforcements(
                conn,
                decision.instance_id,
                decision.lease_token,
                decision.outcomes,
                decision.final_status,
                now,
                decision.evaluations,
            )
        except (*DECISION_ERRORS, sqlite3.IntegrityError) as exc:
            conn.execute("ROLLBACK TO decision")
            conn.execute("RELEASE decision")
            results.append(exc if isinstance(exc, StoreError) else Conflict(f"sqlite: {exc}"))
            continue
        conn.execute("RELEASE decision")
        results.append(written)
        executions += requested
    return results, executions


async def pg_record_decisions(
    conn: asyncpg.Connection, decisions: Sequence[InstanceDecision], now: datetime
) -> list[Outcome]:
    """Per decision: the enforcement ids written, or its error.

    The common case — every lease still held, no once_per rule — is written set-wise, a
    handful of statements for the whole chunk instead of ten round trips per instance.
    Anything unusual rolls that attempt back and takes the one-savepoint-per-decision
    path, which says which decision failed and why.
    """
    if decisions and not any(o.once_per_key is not None for d in decisions for o in d.outcomes):
        try:
            async with conn.transaction():  # a savepoint: all of the chunk or none
                return await postgres_ops.record_decisions_together(conn, decisions, now)
        except (*DECISION_ERRORS, asyncpg.UniqueViolationError, postgres_ops.NotTogether):
            pass
    results: list[Outcome] = []
    for decision in decisions:
        try:
            async with conn.transaction():  # nested: a savepoint
                written = await explain_ops.pg_record_enforcements(
                    conn,
                    decision.instance_id,
                    decision.lease_token,
                    decision.outcomes,
                    decision.final_status,
                    now,
                    decision.evaluations,
                )
        except DECISION_ERRORS as exc:
            results.append(exc)
            continue
        except asyncpg.UniqueViolationError as exc:
            results.append(Conflict(f"postgresql: {exc}"))
            continue
        results.append(written)
    return results
