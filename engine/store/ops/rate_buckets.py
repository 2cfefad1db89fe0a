"""Token buckets shared by the processes of one store, both dialects: a process takes a
few tokens at a time (engine.http.rate_limits) so that several processes on one
PostgreSQL keep one limit between them.

`take` refills the bucket by the time since it was last touched (at most `burst`), grants
up to `want` whole tokens and says how long until the next one when it grants none — in
one transaction, under the row's lock, with the database's clock on PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import TYPE_CHECKING

from engine.store.codec import time_from_text, time_to_text

if TYPE_CHECKING:  # annotations only: SQLite processes never load asyncpg
    import asyncpg


def _grant(tokens: float, want: int, rate: float) -> tuple[int, float]:
    granted = min(want, int(tokens))
    wait = 0.0 if granted else (1.0 - tokens) / rate
    return granted, wait


def sqlite_take(
    conn: sqlite3.Connection, key: str, rate: float, burst: float, want: int, now: datetime
) -> tuple[int, float]:
    row = conn.execute(
        "SELECT tokens, updated_at FROM rate_buckets WHERE key = ?", (key,)
    ).fetchone()
    tokens = burst
    if row is not None:
        elapsed = max(0.0, (now - time_from_text(row[1])).total_seconds())
        tokens = min(burst, row[0] + elapsed * rate)
    granted, wait = _grant(tokens, want, rate)
    conn.execute(
        "INSERT INTO rate_buckets (key, tokens, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens,"
        " updated_at = excluded.updated_at",
        (key, tokens - granted, time_to_text(now)),
    )
    return granted, wait


async def pg_take(
    conn: asyncpg.Connection, key: str, rate: float, burst: float, want: int, now: datetime
) -> tuple[int, float]:
    # `now` is unused: every process refills by the database's clock.
    tokens = await conn.fetchval(
        "INSERT INTO rate_buckets AS b (key, tokens, updated_at) VALUES ($1, $3, now())"
        " ON CONFLICT (key) DO UPDATE SET tokens = least($3, b.tokens"
        " + extract(epoch FROM now() - b.updated_at) * $2), updated_at = now()"
        " RETURNING tokens",
        key,
        rate,
        burst,
    )
    granted, wait = _grant(tokens, want, rate)
    if granted:
        await conn.execute(
            "UPDATE rate_buckets SET tokens = tokens - $2 WHERE key = $1", key, float(granted)
        )
    return granted, wait
