"""Whole-store copies: backups, restores and moves between SQLite and PostgreSQL.

One mechanism serves `hookyard backup`, `restore` and `migrate` (engine.cli.backup): every
table of a store copied, row by row in pages, into another store of the same schema
version, one side of which is always an SQLite file — a backup is an SQLite file
whichever store it came from, so it can be restored into either.

- A SQLite store is backed up with SQLite's online backup API: a consistent copy while
  `hookyard serve` keeps writing.
- A PostgreSQL store is read in one REPEATABLE READ transaction (one consistent snapshot)
  into a new SQLite file.
- Restoring and migrating copy into an empty store (one holding no records: refused
  otherwise, so nothing is merged by accident), tables in foreign-key order, PostgreSQL
  in one transaction; afterwards the rows of every table are counted on both sides and
  must agree.

Values are converted where the dialects differ (timestamps are fixed-width UTC text in
SQLite and timestamptz in PostgreSQL, booleans are integers in SQLite); JSON is text on
both sides. The `claimers` table is not copied: it names the processes of the store it
is in. The schema versions must be equal — both stores are opened (and so migrated) by
this Hookyard first.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from engine.errors import StoreError
from engine.store.codec import redact_url, time_from_text, time_to_text
from engine.store.migrations.postgres import MIGRATIONS as PG_MIGRATIONS
from engine.store.migrations.sqlite import MIGRATIONS as SQLITE_MIGRATIONS

PAGE = 1000
# Rows that describe this store's own processes, not its data.
NOT_COPIED = frozenset({"claimers"})
# One-row bookkeeping tables that a new store fills itself: overwritten, not refused.
SINGLETONS = frozenset({"rules_version"})


class TransferError(StoreError):
    """Raised when a backup, restore or move cannot be done (the message says why)."""


@dataclass(frozen=True)
class Copied:
    """Rows per table, counted on both sides after a copy."""

    counts: dict[str, int]


# --- SQLite side ---------------------------------------------------------------------------


def sqlite_online_backup(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite store (WAL included) into a new file."""
    if target.exists():
        raise TransferError(f"{target} exists already; give a new file name")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst, pages=4096)
        finally:
            dst.close()
    finally:
        src.close()


def sqlite_tables(conn: sqlite3.Connection) -> list[str]:
    """The data tables in foreign-key order (a table after those it references)."""
    names = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " ORDER BY name"
        )
        if r[0] not in NOT_COPIED
    ]
    references = {
        name: {row[2] for row in conn.execute(f'PRAGMA foreign_key_list("{name}")')}
        for name in names
    }
    ordered: list[str] = []
    while len(ordered) < len(names):
        ready = [n for n in names if n not in ordered and references[n] <= set(ordered)]
        if not ready:
            raise TransferError(
                f"foreign keys form a cycle among {sorted(set(names) - set(ordered))}"
            )
        ordered.extend(ready)
    return ordered


def sqlite_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]


def sqlite_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


# --- PostgreSQL side -----------------------------------------------------------------------


async def pg_column_types(conn: asyncpg.Connection, table: str) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = $1",
        table,
    )
    return {r["column_name"]: r["data_type"] for r in rows}


async def pg_version(conn: asyncpg.Connection) -> int:
    try:
        return await conn.fetchval("SELECT coalesce(max(version), 0) FROM hookyard_schema_version")
    except asyncpg.UndefinedTableError:
        return 0


def to_pg(kind: str) -> Callable[[Any], Any]:
    """SQLite value → the PostgreSQL column type `kind` (information_schema data_type)."""
    if kind.startswith("timestamp"):
        return time_from_text
    if kind == "boolean":
        return lambda v: None if v is None else bool(v)
    return _same


def to_sqlite(kind: str) -> Callable[[Any], Any]:
    if kind.startswith("timestamp"):
        return time_to_text
    if kind == "boolean":
        return lambda v: None if v is None else int(v)
    return _same


def _same(value: Any) -> Any:
    return value


@asynccontextmanager
async def pg_connection(url: str) -> AsyncIterator[asyncpg.Connection]:
    try:
        conn = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise TransferError(f"cannot connect to {redact_url(url)}: {exc}") from exc
    try:
        yield conn
    finally:
        await conn.close()


# --- copies ----------------------------------------------------------------------------------


def _check_current(sqlite: int, pg: int | None = None) -> None:
    """Both sides at this Hookyard's schema (each dialect numbers its own migrations)."""
    if sqlite != len(SQLITE_MIGRATIONS) or (pg is not None and pg != len(PG_MIGRATIONS)):
        raise TransferError(
            f"a store is not at this Hookyard's schema (SQLite version {sqlite} of "
            f"{len(SQLITE_MIGRATIONS)}"
            + ("" if pg is None else f", PostgreSQL version {pg} of {len(PG_MIGRATIONS)}")
            + "); open it with this Hookyard first (hookyard serve or any store command)"
        )


def _refuse_if_not_empty(counts: dict[str, int], where: str) -> None:
    held = {t: n for t, n in counts.items() if n and t not in SINGLETONS}
    if held:
        table, rows = next(iter(sorted(held.items())))
        raise TransferError(
            f"{where} is not empty ({rows} rows in {table}{' and more' if len(held) > 1 else ''})"
            "; restore and migrate only into a new, empty store"
        )


async def sqlite_to_pg(sqlite_path: Path, url: str) -> Copied:
    """Copy every table of an SQLite store (a backup or a live one) into an empty
    PostgreSQL store, in one transaction; rows counted on both sides after."""
    src = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    try:
        src.execute("BEGIN")  # one snapshot of the source for the whole copy
        tables = sqlite_tables(src)
        async with pg_connection(url) as dst:
            _check_current(sqlite_version(src), await pg_version(dst))
            _refuse_if_not_empty(
                {t: await dst.fetchval(f'SELECT count(*) FROM "{t}"') for t in tables},
                redact_url(url),
            )
            async with dst.transaction():
                for table in tables:
                    await _copy_table_to_pg(src, dst, table)
                copied = await _compare(
                    tables,
                    lambda t: src.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0],
                    lambda t: dst.fetchval(f'SELECT count(*) FROM "{t}"'),
                )
        src.execute("COMMIT")
        return copied
    finally:
        src.close()


async def _copy_table_to_pg(src: sqlite3.Connection, dst: asyncpg.Connection, table: str) -> None:
    types = await pg_column_types(dst, table)
    columns = [c for c in sqlite_columns(src, table) if c in types]
    convert = [to_pg(types[c]) for c in columns]
    names = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join(f"${i + 1}" for i in range(len(columns)))
    # Numbered columns (serial, or identity: stream_feed.seq) take the copied numbers,
    # and their sequences then go on after the largest.
    numbered = await dst.fetch(
        "SELECT column_name, is_identity FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = $1"
        " AND (column_default LIKE 'nextval(%' OR is_identity = 'YES')",
        table,
    )
    overriding = (
        " OVERRIDING SYSTEM VALUE" if any(r["is_identity"] == "YES" for r in numbered) else ""
    )
    if table in SINGLETONS:
        await dst.execute(f'DELETE FROM "{table}"')
    cursor = src.execute(f'SELECT {names} FROM "{table}"')
    while rows := cursor.fetchmany(PAGE):
        await dst.executemany(
            f'INSERT INTO "{table}" ({names}){overriding} VALUES ({marks})',
            [tuple(f(v) for f, v in zip(convert, row, strict=True)) for row in rows],
        )
    for row in numbered:
        column = row["column_name"]
        await dst.execute(
            f"SELECT setval(pg_get_serial_sequence('\"{table}\"', '{column}'),"
            f' coalesce((SELECT max("{column}") FROM "{table}"), 0) + 1, false)'
        )


async def pg_to_sqlite(url: str, sqlite_path: Path) -> Copied:
    """Copy every table of a PostgreSQL store, from one snapshot, into an empty SQLite
    store (a new file the caller has created with the current schema)."""
    dst = sqlite3.connect(sqlite_path, isolation_level=None)
    try:
        tables = sqlite_tables(dst)
        async with pg_connection(url) as src:
            _check_current(sqlite_version(dst), await pg_version(src))
            _refuse_if_not_empty(
                {t: dst.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables},
                str(sqlite_path),
            )
            async with src.transaction(isolation="repeatable_read", readonly=True):
                dst.execute("BEGIN IMMEDIATE")
                for table in tables:
                    await _copy_table_to_sqlite(src, dst, table)
                copied = await _compare(
                    tables,
                    lambda t: src.fetchval(f'SELECT count(*) FROM "{t}"'),
                    lambda t: dst.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0],
                )
                dst.execute("COMMIT")
        return copied
    finally:
        if dst.in_transaction:
            dst.execute("ROLLBACK")
        dst.close()


async def _copy_table_to_sqlite(
    src: asyncpg.Connection, dst: sqlite3.Connection, table: str
) -> None:
    types = await pg_column_types(src, table)
    columns = [c for c in sqlite_columns(dst, table) if c in types]
    convert = [to_sqlite(types[c]) for c in columns]
    names = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join("?" for _ in columns)
    if table in SINGLETONS:
        dst.execute(f'DELETE FROM "{table}"')
    async for row in _pages(src, f'SELECT {names} FROM "{table}"'):
        dst.executemany(
            f'INSERT INTO "{table}" ({names}) VALUES ({marks})',
            [tuple(f(v) for f, v in zip(convert, r, strict=True)) for r in row],
        )


async def _pages(conn: asyncpg.Connection, sql: str) -> AsyncIterator[list[Any]]:
    cursor = await conn.cursor(sql)
    while rows := await cursor.fetch(PAGE):
        yield [tuple(r) for r in rows]


async def sqlite_to_sqlite(source: Path, target: Path) -> Copied:
    """Copy a SQLite backup into an empty SQLite store (created by the caller)."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target, isolation_level=None)
    try:
        tables = sqlite_tables(src)
        _check_current(sqlite_version(src))
        _check_current(sqlite_version(dst))
        _refuse_if_not_empty(
            {t: dst.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables},
            str(target),
        )
        src.execute("BEGIN")
        dst.execute("BEGIN IMMEDIATE")
        for table in tables:
            columns = sqlite_columns(src, table)
            names = ", ".join(f'"{c}"' for c in columns)
            if table in SINGLETONS:
                dst.execute(f'DELETE FROM "{table}"')
            cursor = src.execute(f'SELECT {names} FROM "{table}"')
            while rows := cursor.fetchmany(PAGE):
                dst.executemany(
                    f'INSERT INTO "{table}" ({names}) VALUES ({", ".join("?" for _ in columns)})',
                    rows,
                )
        copied = await _compare(
            tables,
            lambda t: src.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0],
            lambda t: dst.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0],
        )
        dst.execute("COMMIT")
        src.execute("COMMIT")
        return copied
    finally:
        if dst.in_transaction:
            dst.execute("ROLLBACK")
        src.close()
        dst.close()


async def _compare(
    tables: Sequence[str], count_source: Callable[[str], Any], count_target: Callable[[str], Any]
) -> Copied:
    counts: dict[str, int] = {}
    for table in tables:
        source = await _value(count_source(table))
        target = await _value(count_target(table))
        if source != target:
            raise TransferError(
                f"{table}: {source} rows in the source but {target} copied; nothing was kept"
            )
        counts[table] = source
    return Copied(counts)


async def _value(value: Any) -> Any:
    if hasattr(value, "__await__"):
        return await value
    return value
