"""Several execution writes in one transaction, both dialects (engine.store.sql_store
groups the starts and finishes that arrive together).

An item is a list of steps `(op, args)` — an execution's start, its finish, or both for an
action that ran at once — applied in order; the answer of its last step is the item's.
A stale lease or a missing row is that item's answer (LeaseLost, NotFound), not the
batch's: a multi-step item is written under a savepoint, so an item that fails halfway
leaves nothing behind, and its neighbours commit. Any other error fails the transaction
(the group committer then writes the items one by one).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine.errors import LeaseLost, NotFound
from engine.store.dialect import Step

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg

# Errors that belong to one item: raised by a step before it writes anything.
ITEM_ERRORS = (LeaseLost, NotFound)


def sqlite_run_grouped(conn: sqlite3.Connection, items: Sequence[Sequence[Step]]) -> list[Any]:
    answers: list[Any] = []
    for steps in items:
        several = len(steps) > 1
        if several:
            conn.execute("SAVEPOINT grouped_item")
        try:
            answer = None
            for op, args in steps:
                answer = op(conn, *args)
        except ITEM_ERRORS as exc:
            if several:
                conn.execute("ROLLBACK TO grouped_item")
                conn.execute("RELEASE grouped_item")
            answers.append(exc)
            continue
        if several:
            conn.execute("RELEASE grouped_item")
        answers.append(answer)
    return answers


async def pg_run_grouped(conn: asyncpg.Connection, items: Sequence[Sequence[Step]]) -> list[Any]:
    answers: list[Any] = []
    for steps in items:
        try:
            if len(steps) > 1:
                async with conn.transaction():  # a savepoint inside the batch's transaction
                    answer = await _pg_steps(conn, steps)
            else:
                answer = await _pg_steps(conn, steps)
        except ITEM_ERRORS as exc:
            answers.append(exc)
            continue
        answers.append(answer)
    return answers


async def _pg_steps(conn: asyncpg.Connection, steps: Sequence[Step]) -> Any:
    answer = None
    for op, args in steps:
        answer = await op(conn, *args)
    return answer
