"""Generic trigger instances (engine.model.generic_triggers) written in the transaction
that finishes an execution, both dialects: they exist if and only if the end does.

`source(execution)` builds them from the finished row; the finishing worker passes one
only when its rule set has a rule on a generic trigger, so an engine with none pays
nothing here (not even a read).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from engine.model.records import Execution, NewTriggerInstance
from engine.store import codec
from engine.store.ops import instances

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg

GenericSource = Callable[[Execution], Sequence[NewTriggerInstance]]


def sqlite_fire(
    conn: sqlite3.Connection, execution: Execution, source: GenericSource | None, now: datetime
) -> None:
    if source is None:
        return
    batch = [codec.prepare_trigger_instance(item) for item in source(execution)]
    if batch:
        instances.sqlite_insert(conn, batch, now)


def sqlite_fire_all(
    conn: sqlite3.Connection,
    ended: Iterable[Execution],
    source: GenericSource | None,
    now: datetime,
) -> None:
    """Each of `ended` (executions that have just ended in this transaction) fires."""
    if source is not None:
        for execution in ended:
            sqlite_fire(conn, execution, source, now)


async def pg_fire_all(
    conn: asyncpg.Connection, ended: Iterable[Execution], source: GenericSource | None
) -> None:
    if source is not None:
        for execution in ended:
            await pg_fire(conn, execution, source)


async def pg_fire(
    conn: asyncpg.Connection, execution: Execution, source: GenericSource | None
) -> None:
    if source is None:
        return
    batch = [codec.prepare_trigger_instance(item) for item in source(execution)]
    if batch:
        await instances.pg_insert(conn, batch)
