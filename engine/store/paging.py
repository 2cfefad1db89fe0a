"""Paged listing for the API: one filtered, ordered page plus the total, per backend.

Both stores list trigger instances, enforcements, executions and deliveries the same way:
conditions from codec.parse_filters, newest first, `limit`/`offset`, total count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from engine.model.records import Page
from engine.store.codec import Condition, time_to_text


def sqlite_page(
    conn: Any,
    table: str,
    columns: str,
    order_by: str,
    to_record: Callable[[Any], Any],
    conditions: Sequence[Condition],
    limit: int,
    offset: int,
) -> Page:
    """One filtered page with the total, read in one snapshot so both agree."""
    clauses: list[str] = []
    params: list[Any] = []
    for condition in conditions:
        value = condition.value
        if condition.op == "is null":
            clauses.append(f"{condition.column} IS NULL")
        elif condition.op == "in":
            clauses.append(f"{condition.column} IN ({','.join('?' * len(value))})")
            params.extend(value)
        else:
            clauses.append(f"{condition.column} {condition.op} ?")
            params.append(time_to_text(value) if isinstance(value, datetime) else value)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    conn.execute("BEGIN")
    try:
        total = conn.execute(f"SELECT count(*) FROM {table}{where}", params).fetchone()[0]
        rows = conn.execute(
            f"SELECT {columns} FROM {table}{where} ORDER BY {order_by} LIMIT ? OFFSET ?",
            [*params, limit, offset],
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    return Page(items=[to_record(row) for row in rows], total=total)


async def postgres_page(
    conn: Any,
    table: str,
    columns: str,
    order_by: str,
    to_record: Callable[[Any], Any],
    conditions: Sequence[Condition],
    limit: int,
    offset: int,
) -> Page:
    """One filtered page with the total (callers run it in one repeatable-read transaction)."""
    clauses: list[str] = []
    params: list[Any] = []
    for condition in conditions:
        if condition.op == "is null":
            clauses.append(f"{condition.column} IS NULL")
            continue
        params.append(condition.value)
        if condition.op == "in":
            clauses.append(f"{condition.column} = ANY(${len(params)}::text[])")
        else:
            clauses.append(f"{condition.column} {condition.op} ${len(params)}")
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    total = await conn.fetchval(f"SELECT count(*) FROM {table}{where}", *params)
    rows = await conn.fetch(
        f"SELECT {columns} FROM {table}{where} ORDER BY {order_by}"
        f" LIMIT ${len(params) + 1} OFFSET ${len(params) + 2}",
        *params,
        limit,
        offset,
    )
    return Page(items=[to_record(row) for row in rows], total=total)
