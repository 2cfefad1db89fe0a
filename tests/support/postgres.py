"""Scratch PostgreSQL databases on the server named by HOOKYARD_TEST_PG (tests that need
one skip without it)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

PG_ENV = "HOOKYARD_TEST_PG"


def server_url() -> str:
    """The PostgreSQL server's URL (the test skips when HOOKYARD_TEST_PG is not set)."""
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} is not set")
    return url


def database_url(server: str, name: str) -> str:
    """The URL of database `name` on the server at `server`."""
    return urlunsplit(urlsplit(server)._replace(path=f"/{name}"))


async def admin(url: str, statement: str) -> None:
    """Run one statement on its own connection (CREATE/DROP DATABASE)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def scratch_database(prefix: str) -> AsyncIterator[str]:
    """A fresh empty database on the server (its URL), dropped afterwards."""
    server = server_url()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await admin(server, f'CREATE DATABASE "{name}"')
    try:
        yield database_url(server, name)
    finally:
        await admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
    async with scratch_database(prefix) as url:
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
