"""Roles arrive on a database with keys of the previous version: admin keys stay admin,
webhook- or trigger-scoped keys stay posting keys, every other key becomes a read-only
observer, and serve warns once at start-up naming those (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from engine.config import AuthSettings, Settings, StoreSettings
from engine.http.app import create_app
from engine.http.auth import warn_about_migrated_keys
from engine.model.apikeys import hash_key
from engine.model.records import utcnow
from engine.store import create_store
from engine.store.codec import time_to_text
from engine.store.migrations import postgres as pg_migrations
from engine.store.migrations import sqlite as sqlite_migrations
from tests.support.postgres import pg_database_before

# Keys as the previous version stored them: (name, admin, webhooks, triggers).
OLD_KEYS = (
    ("root", True, "[]", "[]"),
    ("ci", False, "[]", "[]"),
    ("partner", False, '["github"]', "[]"),
    ("fires", False, "[]", '["ci.deployed"]'),
    ("scoped-admin", True, '["github"]', "[]"),
)
EXPECTED = {
    "root": "admin",
    "ci": "observer",
    "partner": "webhook",
    "fires": "webhook",
    "scoped-admin": "webhook",
}
OLD_INSERT = (
    "INSERT INTO api_keys (id, name, prefix, key_hash, admin, webhooks, triggers, created_at,"
    " expires_at, enabled) VALUES ({})"
)


def _key(name: str) -> str:
    return f"hy_{name[:4]:x<8}{'0' * 40}"


def _before_roles(migrations) -> tuple:
    return migrations.MIGRATIONS[: migrations.MIGRATIONS.index(migrations._API_KEY_ROLES)]


def insert_old_keys(conn: sqlite3.Connection, id_prefix: str, key_of) -> None:
    """OLD_KEYS as a process of the previous version writes them (no role columns)."""
    for i, (name, admin, webhooks, triggers) in enumerate(OLD_KEYS):
        key = key_of(name)
        row = (f"{id_prefix}{i}", name, key[:11], hash_key(key), int(admin), webhooks, triggers)
        conn.execute(
            OLD_INSERT.format(", ".join("?" * 10)), (*row, time_to_text(utcnow()), None, 1)
        )


def old_sqlite_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        for version, statements in enumerate(_before_roles(sqlite_migrations), start=1):
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
        insert_old_keys(conn, "id", lambda name: _key(name))
        conn.commit()
    finally:
        conn.close()


async def test_sqlite_keys_get_roles_and_serve_names_the_new_observers(tmp_path, caplog, capsys):
    old_sqlite_database(tmp_path / "hookyard.db")
    settings = Settings(
        store=StoreSettings(url=f"sqlite:///{tmp_path}/hookyard.db"),
        auth=AuthSettings(enabled=True),
        rules_dirs=(),
        packs_dirs=(),
        roles=("api",),
        base_dir=str(tmp_path),
    )
    with caplog.at_level(logging.WARNING, logger="engine.http.auth"):
        async with TestClient(TestServer(create_app(settings))) as client:
            from engine.http.context import RUNTIME

            keys = {k.name: k for k in await client.app[RUNTIME].store.list_api_keys()}
            # The old unscoped non-admin key now only reads.
            ci = {"St2-Api-Key": _key("ci")}
            assert (await client.get("/api/v1/executions", headers=ci)).status == 200
            refused = await client.post(
                "/api/v1/executions", json={"action": "core.local"}, headers=ci
            )
            assert refused.status == 403
            # ...but it still posts webhooks, as it did before: an upgrade refuses no event.
            posted = await client.post(
                "/webhooks/st2", json={"trigger": "t.x", "payload": {}}, headers=ci
            )
            assert posted.status != 403, await posted.text()
            admin = {"St2-Api-Key": _key("root")}
            assert (await client.get("/api/v1/apikeys", headers=admin)).status == 200
    assert "An admin API key was created" not in capsys.readouterr().out
    assert {name: key.role for name, key in keys.items()} == EXPECTED
    assert [name for name, key in keys.items() if key.role_migrated] == ["ci"]
    assert keys["partner"].webhooks == ("github",) and keys["fires"].triggers == ("ci.deployed",)
    warnings = [r.getMessage() for r in caplog.records if "are now observers" in r.getMessage()]
    assert len(warnings) == 1
    assert "'ci' (id id1)" in warnings[0] and "root" not in warnings[0]
    assert "hookyard apikey set-role ID --role operator --pack PACK" in warnings[0]


async def test_setting_a_role_ends_the_warning(tmp_path, caplog):
    old_sqlite_database(tmp_path / "hookyard.db")
    store = create_store(StoreSettings(url=f"sqlite:///{tmp_path}/hookyard.db"), tmp_path)
    await store.open()
    try:
        ci = next(k for k in await store.list_api_keys() if k.name == "ci")
        await store.set_api_key_role(ci.id, "observer", ci.grants)
        with caplog.at_level(logging.WARNING, logger="engine.http.auth"):
            await warn_about_migrated_keys(store)
        assert not [r for r in caplog.records if "are now observers" in r.getMessage()]
    finally:
        await store.close()


@pytest.fixture
async def old_pg_database():
    migration = pg_migrations._API_KEY_ROLES
    async with pg_database_before(pg_migrations.MIGRATIONS, migration, "hookyard_roles") as (
        url,
        conn,
    ):
        placeholders = ", ".join(f"${n}" for n in range(1, 11))
        for i, (key_name, is_admin, webhooks, triggers) in enumerate(OLD_KEYS):
            await conn.execute(
                OLD_INSERT.format(placeholders)
                .replace("$6", "$6::jsonb", 1)
                .replace("$7", "$7::jsonb", 1),
                f"id{i}",
                key_name,
                _key(key_name)[:11],
                hash_key(_key(key_name)),
                is_admin,
                webhooks,
                triggers,
                utcnow(),
                None,
                True,
            )
        yield url


@pytest.mark.postgres
async def test_postgres_keys_get_roles(old_pg_database, tmp_path, caplog):
    store = create_store(StoreSettings(url=old_pg_database), tmp_path)
    await store.open()
    try:
        keys = {k.name: k for k in await store.list_api_keys()}
        assert {name: key.role for name, key in keys.items()} == EXPECTED
        assert [name for name, key in keys.items() if key.role_migrated] == ["ci"]
        assert keys["root"].admin and not keys["ci"].admin
        with caplog.at_level(logging.WARNING, logger="engine.http.auth"):
            await warn_about_migrated_keys(store)
        assert any("'ci' (id id1)" in r.getMessage() for r in caplog.records)
    finally:
        await store.close()


async def test_keys_a_previous_version_process_writes_after_the_migration(tmp_path):
    """Processes upgrade one at a time: an old one's keys (no role) read as migrated."""
    old_sqlite_database(tmp_path / "hookyard.db")
    store = create_store(StoreSettings(url=f"sqlite:///{tmp_path}/hookyard.db"), tmp_path)
    await store.open()
    await store.close()  # migrated
    conn = sqlite3.connect(tmp_path / "hookyard.db")
    try:
        insert_old_keys(conn, "late", lambda name: f"hy_late{name[:4]:x<4}{'1' * 40}")
        conn.commit()
    finally:
        conn.close()
    store = create_store(StoreSettings(url=f"sqlite:///{tmp_path}/hookyard.db"), tmp_path)
    await store.open()
    try:
        late = {k.name: k.role for k in await store.list_api_keys() if k.id.startswith("late")}
        assert late == EXPECTED
    finally:
        await store.close()
