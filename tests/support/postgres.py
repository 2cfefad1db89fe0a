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
