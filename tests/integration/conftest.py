"""Integration fixtures: the app under test, and stores on both backends.

`client` is a test client on the app built from the test module's `settings` fixture
(each module says what its app is; tests/support/app.py builds the common part).

Every store test runs on SQLite (a real file) and on PostgreSQL.

The PostgreSQL half runs when HOOKYARD_TEST_PG names a server database
(e.g. postgresql://postgres@127.0.0.1:5432/postgres): one fresh database is created for
the test session and dropped at its end; each test starts on empty tables. Each parameter
builds only its own backend.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from engine.config import Settings, StoreSettings
from engine.store import Store, create_store
from tests.support.app import app_client
from tests.support.postgres import admin, database_url, server_url, truncate_all

OpenStore = Callable[..., Awaitable[Store]]


@pytest.fixture
def after_start() -> Callable[[TestClient], Awaitable[None]]:
    """What a module does with its app once it is up, before the test (e.g. take the
    admin key it printed and store more keys); a module overrides it. Nothing here."""

    async def nothing(client: TestClient) -> None:
        return None

    return nothing


@pytest.fixture
async def client(
    settings: Settings, after_start: Callable[[TestClient], Awaitable[None]]
) -> AsyncIterator[TestClient]:
    """A test client on the app the module's `settings` fixture describes."""
    async with app_client(settings) as started:
        await after_start(started)
        yield started


def _run_in_own_loop(coro: Awaitable[Any]) -> Any:
    # Session fixtures run outside the tests' event loops; a private thread keeps
    # asyncio.run from touching the loop pytest-asyncio manages.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (skips when not configured)."""
    server = server_url()
    name = f"hookyard_test_{uuid.uuid4().hex[:12]}"
    _run_in_own_loop(admin(server, f'CREATE DATABASE "{name}"'))
    try:
        yield database_url(server, name)
    finally:
        _run_in_own_loop(admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


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
