"""asyncpg or psycopg 3 for the PostgreSQL store: the group-commit insert loop, both ways.

    pip install "psycopg[binary]"   # for this benchmark only; Hookyard does not need it
    python bench/bench_pg_drivers.py [--rows 20000] [--batch 32] [--repeat 5]
        [--pg-admin-url postgresql://postgres@127.0.0.1:5432/postgres]

Creates a fresh database with Hookyard's real schema (engine.store.migrations.postgres),
then inserts --rows trigger instances (a ~1 KB JSON payload each) in batches of --batch,
one transaction per batch on one connection — what the store's group committer does —
with each driver and each way of sending a batch:

  asyncpg   unnest    one INSERT ... SELECT FROM unnest($1::text[], ...) (what the store does)
  asyncpg   executemany
  psycopg   unnest    the same statement, arrays adapted by psycopg
  psycopg   executemany  (pipeline mode since psycopg 3.1)

Rounds alternate the drivers; each figure is the median rows/s over --repeat rounds, and
the client process's CPU time per row (what the event loop pays) is reported beside it.
The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from harness import pg_admin

from engine.model.records import new_id
from engine.store.migrations.postgres import MIGRATIONS

UNNEST_INSERT = (
    "INSERT INTO trigger_instances (id, trigger, payload, occurrence_time, status, webhook)"
    " SELECT i, t, p::jsonb, o, 'pending', w"
    " FROM unnest({a}::text[], {b}::text[], {c}::text[], {d}::timestamptz[], {e}::text[])"
    " AS u(i, t, p, o, w)"
)
ROW_INSERT = (
    "INSERT INTO trigger_instances (id, trigger, payload, occurrence_time, status, webhook)"
    " VALUES ({a}, {b}, {c}::jsonb, {d}, 'pending', {e})"
)
ASYNCPG_MARKS = {"a": "$1", "b": "$2", "c": "$3", "d": "$4", "e": "$5"}
PSYCOPG_MARKS = dict.fromkeys("abcde", "%s")

PAYLOAD = json.dumps(
    {
        "headers": {"Content-Type": "application/json", "X-GitHub-Event": "push"},
        "headers_lower": {"content-type": "application/json", "x-github-event": "push"},
        "body": {
            "ref": "refs/heads/main",
            "repository": {"name": "hookyard", "full_name": "example/hookyard"},
            "commits": [{"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "message": "x" * 600}],
        },
    }
)

Batch = list[tuple[str, str, str, datetime, str]]


def make_batches(rows: int, size: int) -> list[Batch]:
    now = datetime.now(UTC)
    items = [(new_id(), "core.st2.webhook", PAYLOAD, now, "bench") for _ in range(rows)]
    return [items[i : i + size] for i in range(0, rows, size)]


def columns(batch: Batch) -> list[list]:
    return [list(column) for column in zip(*batch, strict=True)]


async def asyncpg_loop(url: str, batches: list[Batch], mode: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        if mode == "unnest":
            statement = UNNEST_INSERT.format(**ASYNCPG_MARKS)
            for batch in batches:
                async with conn.transaction():
                    await conn.execute(statement, *columns(batch))
        else:
            statement = ROW_INSERT.format(**ASYNCPG_MARKS)
            for batch in batches:
                async with conn.transaction():
                    await conn.executemany(statement, batch)
    finally:
        await conn.close()


async def psycopg_loop(url: str, batches: list[Batch], mode: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url) as conn:
        if mode == "unnest":
            statement = UNNEST_INSERT.format(**PSYCOPG_MARKS)
            for batch in batches:
                async with conn.transaction():
                    await conn.execute(statement, columns(batch), prepare=True)
        else:
            statement = ROW_INSERT.format(**PSYCOPG_MARKS)
            for batch in batches:
                async with conn.transaction(), conn.cursor() as cursor:
                    await cursor.executemany(statement, batch)


async def create_schema(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        for migration in MIGRATIONS:
            for statement in migration:
                await conn.execute(statement)
    finally:
        await conn.close()


def measure(loop: Callable[[], Awaitable[None]], rows: int) -> tuple[float, float]:
    """(rows per second, client CPU microseconds per row)."""
    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(loop())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return rows / wall, cpu / rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    database = f"hookyard_drivers_{os.getpid()}"
    url = f"{args.pg_admin_url.rpartition('/')[0]}/{database}"
    variants = {
        ("asyncpg", "unnest"): asyncpg_loop,
        ("asyncpg", "executemany"): asyncpg_loop,
        ("psycopg", "unnest"): psycopg_loop,
        ("psycopg", "executemany"): psycopg_loop,
    }
    results: dict[tuple[str, str], list[tuple[float, float]]] = {key: [] for key in variants}
    asyncio.run(pg_admin(args.pg_admin_url, f'CREATE DATABASE "{database}"'))
    try:
        asyncio.run(create_schema(url))
        for round_index in range(args.repeat):
            keys = list(variants)
            shift = round_index % len(keys)
            for key in keys[shift:] + keys[:shift]:
                batches = make_batches(args.rows, args.batch)
                loop = variants[key]
                results[key].append(
                    measure(lambda loop=loop, b=batches, m=key[1]: loop(url, b, m), args.rows)
                )
    finally:
        asyncio.run(pg_admin(args.pg_admin_url, f'DROP DATABASE "{database}" WITH (FORCE)'))
    print(
        f"{args.rows} rows in batches of {args.batch}, one transaction per batch, "
        f"median of {args.repeat} rounds"
    )
    print("| driver | batch sent as | rows/s | client CPU µs/row |")
    print("| --- | --- | ---: | ---: |")
    for (driver, mode), samples in results.items():
        rate = statistics.median(s[0] for s in samples)
        cpu = statistics.median(s[1] for s in samples)
        print(f"| {driver} | {mode} | {rate:,.0f} | {cpu:.1f} |")


if __name__ == "__main__":
    main()
