"""A child execution's end reaches its workflow, both dialects.

Every transaction that moves an execution to a final status (finished by its worker,
canceled before it ran, abandoned, settled after its worker died) calls this with what
it ended: the workflow runs of their parents become due in that same transaction, so a
crash between a child's end and its workflow's next step loses nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING

from engine.model.records import Execution
from engine.store.ops import columns

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg


def _parents(ended: Iterable[Execution]) -> list[str]:
    return sorted({execution.parent for execution in ended if execution.parent})


def sqlite_mark_parents_due(conn: sqlite3.Connection, ended: Iterable[Execution]) -> bool:
    """Whether any ended execution had a parent (its run is due now)."""
    parents = _parents(ended)
    for parent in parents:
        conn.execute("UPDATE workflow_runs SET due = 1 WHERE execution_id = ?", (parent,))
    return bool(parents)


async def pg_mark_parents_due(conn: asyncpg.Connection, ended: Iterable[Execution]) -> bool:
    parents = _parents(ended)
    if parents:
        await conn.execute(
            "UPDATE workflow_runs SET due = true WHERE execution_id = ANY($1::text[])", parents
        )
        await columns.pg_notify(conn, "workflows")
    return bool(parents)
