"""The PostgreSQL migration of trigger instance payloads to json keeps the rows and the
dedupe keys of a database written by the previous version, and a process of the previous
version still stores webhooks in the migrated table (processes upgrade one at a time)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from engine.config import StoreSettings
from engine.model.records import NewTriggerInstance
from engine.store import create_store
from engine.store.migrations.postgres import _PAYLOAD_JSON, MIGRATIONS
from tests.support.postgres import pg_database_before

pytestmark = pytest.mark.postgres

PAYLOAD = {"headers": {"X-GitHub-Event": "push"}, "body": {"b": 1, "a": [1.5, "x"]}}
# The previous version's insert: its payload cast to jsonb, its conflict on dedupe_key.
PREVIOUS_INSERT = (
    "INSERT INTO trigger_instances (id, trigger, payload, occurrence_time, status, webhook,"
    " dedupe_key) VALUES ($1, 'core.st2.webhook', $2::jsonb, now(), 'pending', 'hook', $3)"
    " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id"
)


@pytest.fixture
async def old_database() -> AsyncIterator[str]:
    """A fresh database at the schema version before payload json, with rows in it."""
    async with pg_database_before(MIGRATIONS, _PAYLOAD_JSON, "hookyard_mig") as (url, conn):
        for instance_id, key in (("old-keyed", "hook:delivery-1"), ("old-plain", None)):
            await conn.execute(PREVIOUS_INSERT, instance_id, json.dumps(PAYLOAD), key)
        yield url


async def test_migration_keeps_payloads_and_dedupe_keys(old_database: str, tmp_path: Path) -> None:
    store = create_store(StoreSettings(url=old_database), tmp_path)
    await store.open()
    try:
        old = await store.get_trigger_instance("old-keyed")
        assert old is not None and old.payload == PAYLOAD
        # The old row's key still deduplicates; rows without a key never collide.
        again, first, second = await store.add_trigger_instances(
            [
                NewTriggerInstance("core.st2.webhook", {"n": 1}, "hook", "hook:delivery-1"),
                NewTriggerInstance("core.st2.webhook", {"n": 2}, "hook", None),
                NewTriggerInstance("core.st2.webhook", {"n": 3}, "hook", None),
            ]
        )
        assert (again.id, again.duplicate) == ("old-keyed", True)
        assert not first.duplicate and not second.duplicate and first.id != second.id
        fresh = await store.add_trigger_instances(
            [NewTriggerInstance("core.st2.webhook", {"n": 4}, "hook", "hook:delivery-2")]
        )
        repeat = await store.add_trigger_instances(
            [NewTriggerInstance("core.st2.webhook", {"n": 5}, "hook", "hook:delivery-2")]
        )
        assert repeat[0].duplicate and repeat[0].id == fresh[0].id
        stored = await store.get_trigger_instance(first.id)
        assert stored is not None and stored.payload == {"n": 2}
    finally:
        await store.close()
    conn = await asyncpg.connect(old_database)
    try:
        column_type = await conn.fetchval(
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_name = 'trigger_instances' AND column_name = 'payload'"
        )
        version = await conn.fetchval("SELECT max(version) FROM hookyard_schema_version")
        # A process of the previous version, still running: it stores, and its dedupe
        # keys conflict with the new version's.
        written = await conn.fetchval(PREVIOUS_INSERT, "old-process", '{"n": 6}', None)
        repeated = await conn.fetchval(PREVIOUS_INSERT, "old-repeat", "{}", "hook:delivery-2")
    finally:
        await conn.close()
    assert column_type == "json"
    assert version == len(MIGRATIONS)
    assert written == "old-process" and repeated is None
    reopened = create_store(StoreSettings(url=old_database), tmp_path)
    await reopened.open()
    try:
        stored = await reopened.get_trigger_instance("old-process")
        assert stored is not None and stored.payload == {"n": 6}
    finally:
        await reopened.close()
