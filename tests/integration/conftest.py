"""Store fixtures: every store test runs on SQLite (a real file) and on PostgreSQL.

The PostgreSQL half runs when HOOKYARD_TEST_PG names a server database
(e.g. postgresql://postgres@127.0.0.1:5432/postgres): one fresh database is created for
the test session and dropped at its end; each test starts on empty tables. Each parameter
builds only its own backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from engine.config import StoreSettings
from engine.store import Store, create_store

PG_ENV = "HOOKYARD_TEST_PG"

OpenStore = Callable[..., Awaitable[Store]]


def _run_in_own_loop(coro: Awaitable[Any]) -> Any:
    # Session fixtures run outside the tests' event loops; a private thread keeps
    # asyncio.run from touching the loop pytest-asyncio manages.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _admin(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (skips when not configured)."""
    server_url = os.environ.get(PG_ENV)
    if not server_url:
        pytest.skip(f"{PG_ENV} is not set")
    name = f"hookyard_test_{uuid.uuid4().hex[:12]}"
    _run_in_own_loop(_admin(server_url, f'CREATE DATABASE "{name}"'))
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        _run_in_own_loop(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hookyard.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
async def open_store(store_url: str, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens stores on this test's database (several = several processes' worth)."""
    opened: list[Store] = []

    async def open_(**settings: Any) -> Store:
        store = create_store(StoreSettings(url=store_url, **settings), tmp_path)
        await store.open()
        opened.append(store)
        return store

    yield open_
    for store in reversed(opened):
        await store.close()


@pytest.fixture
async def store(open_store: OpenStore, store_url: str) -> Store:
    opened = await open_store()
    if store_url.startswith("postgresql://"):
        await truncate_all(store_url)
    return opened


async def truncate_all(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            " AND tablename <> 'hookyard_schema_version'"
        )
        if tables:
            names = ", ".join(f'"{row["tablename"]}"' for row in tables)
            await conn.execute(f"TRUNCATE {names}")
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def pg_database_before(
    migrations: tuple, migration: tuple, prefix: str
) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    """A fresh database on the server named by HOOKYARD_TEST_PG (the test skips without
    it) at the schema version just before `migration`, as a previous version left it.

    Yields its URL and an open connection for the test to write old rows with (closed when
    the body ends); the database is dropped afterwards.
    """
    server_url = os.environ.get(PG_ENV)
    if not server_url:
        pytest.skip(f"{PG_ENV} is not set")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
        try:
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(
                    "CREATE TABLE hookyard_schema_version (version integer PRIMARY KEY,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                before = migrations[: migrations.index(migration)]
                for version, statements in enumerate(before, start=1):
                    for statement in statements:
                        await conn.execute(statement)
                    await conn.execute("INSERT INTO hookyard_schema_version VALUES ($1)", version)
                yield url, conn
            finally:
                await conn.close()
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
