"""API keys verified from memory (engine.http.key_cache): fewer store reads, and a change
still takes effect — at once in this process, within a second from another one.

The cache runs over a real SQLite store; its reads are counted by wrapping the store's own
`find_api_key`, and the app tests go through the real app and the key API.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer

from engine.config import StoreSettings, load_settings
from engine.http.app import create_app
from engine.http.auth import GATEKEEPER
from engine.http.context import RUNTIME
from engine.http.key_cache import ApiKeyCache
from engine.model.apikeys import key_prefix, new_api_key
from engine.model.roles import WEBHOOK
from engine.store import create_store

CONFIG = """\
store: {url: "sqlite:///hookyard.db"}
rules_dirs: []
packs_dirs: []
roles: [api]
webhooks:
  plain: {}
"""


class CountedFind:
    """The store's own lookup, counted."""

    def __init__(self, store) -> None:
        self.store = store
        self.calls = 0

    async def __call__(self, prefix: str):
        self.calls += 1
        return await self.store.find_api_key(prefix)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def sqlite_store(tmp_path):
    store = create_store(StoreSettings(url="sqlite:///keys.db"), tmp_path)
    await store.open()
    yield store
    await store.close()


async def test_a_found_record_is_read_once_per_max_age(sqlite_store):
    record, key = new_api_key("k", role=WEBHOOK)
    await sqlite_store.create_api_key(record)
    find, clock = CountedFind(sqlite_store), Clock()
    cache = ApiKeyCache(find, max_age=1.0, clock=clock)
    prefix = key_prefix(key)
    assert (await cache.find(prefix)).id == record.id
    assert (await cache.find(prefix)).id == record.id
    assert find.calls == 1
    clock.now += 0.99
    await cache.find(prefix)
    assert find.calls == 1
    clock.now += 0.02  # older than max_age: read again
    await cache.find(prefix)
    assert find.calls == 2


async def test_forget_drops_records_and_an_unknown_prefix_is_never_kept(sqlite_store):
    record, key = new_api_key("k", role=WEBHOOK)
    await sqlite_store.create_api_key(record)
    find = CountedFind(sqlite_store)
    cache = ApiKeyCache(find, clock=Clock())
    await cache.find(key_prefix(key))
    await sqlite_store.set_api_key_enabled(record.id, False)
    assert (await cache.find(key_prefix(key))).enabled  # still the cached record
    cache.forget()
    assert not (await cache.find(key_prefix(key))).enabled
    for _ in range(3):
        assert await cache.find("hy_nothere") is None
    assert find.calls == 2 + 3


async def test_the_cache_holds_at_most_max_entries_least_recently_used_out(sqlite_store):
    keys = []
    for n in range(3):
        record, key = new_api_key(f"k{n}", role=WEBHOOK)
        await sqlite_store.create_api_key(record)
        keys.append(key_prefix(key))
    find = CountedFind(sqlite_store)
    cache = ApiKeyCache(find, max_entries=2, clock=Clock())
    for prefix in keys:  # k0 is pushed out by k2
        await cache.find(prefix)
    await cache.find(keys[2])
    await cache.find(keys[1])
    assert find.calls == 3
    await cache.find(keys[0])
    assert find.calls == 4


async def test_a_change_during_a_lookup_is_not_overwritten_by_the_stale_read(sqlite_store):
    record, key = new_api_key("k", role=WEBHOOK)
    await sqlite_store.create_api_key(record)
    reading = asyncio.Event()
    release = asyncio.Event()

    async def slow_find(prefix):
        found = await sqlite_store.find_api_key(prefix)
        reading.set()
        await release.wait()
        return found

    cache = ApiKeyCache(slow_find, clock=Clock())
    lookup = asyncio.create_task(cache.find(key_prefix(key)))
    await reading.wait()
    await sqlite_store.set_api_key_enabled(record.id, False)
    cache.forget()  # the key API's change lands while the old record is in flight
    release.set()
    assert (await lookup).enabled  # that request saw the record as it was read
    cache._find = sqlite_store.find_api_key
    assert not (await cache.find(key_prefix(key))).enabled


@pytest.fixture
async def app_client(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text(CONFIG)
    settings = load_settings(tmp_path / "config.yaml", environ={})
    async with TestClient(TestServer(create_app(settings))) as client:
        out = capsys.readouterr().out
        client.admin_key = next(
            line.strip() for line in out.splitlines() if line.strip().startswith("hy_")
        )
        yield client


async def _post(client: TestClient, key: str) -> int:
    response = await client.post("/webhooks/plain", json={}, headers={"St2-Api-Key": key})
    return response.status


async def test_a_key_disabled_through_the_api_is_refused_on_the_next_request(app_client):
    store = app_client.server.app[RUNTIME].store
    record, key = new_api_key("sender", role=WEBHOOK)
    await store.create_api_key(record)
    assert await _post(app_client, key) == 202  # now cached
    admin = {"St2-Api-Key": app_client.admin_key}
    response = await app_client.put(
        f"/api/v1/apikeys/{record.id}", json={"enabled": False}, headers=admin
    )
    assert response.status == 200
    assert await _post(app_client, key) == 403
    response = await app_client.delete(f"/api/v1/apikeys/{record.id}", headers=admin)
    assert response.status == 204
    assert await _post(app_client, key) == 401


async def test_a_key_disabled_by_another_process_is_refused_within_a_second(app_client):
    store = app_client.server.app[RUNTIME].store
    record, key = new_api_key("sender", role=WEBHOOK)
    await store.create_api_key(record)
    assert await _post(app_client, key) == 202
    # Another process (`hookyard apikey disable`) writes the store; this one's cache does
    # not hear of it.
    other = create_store(StoreSettings(url="sqlite:///hookyard.db"), store.path.parent)
    await other.open()
    try:
        await other.set_api_key_enabled(record.id, False)
    finally:
        await other.close()
    changed = time.monotonic()
    while await _post(app_client, key) != 403:
        assert time.monotonic() - changed < 1.5, "the change was not seen within a second"
        await asyncio.sleep(0.05)


async def test_expiry_is_exact_although_the_record_is_cached(app_client):
    store = app_client.server.app[RUNTIME].store
    app_client.server.app[GATEKEEPER].keys._max_age = 3600.0  # cached for the whole test
    record, key = new_api_key("short", role=WEBHOOK, lifetime=timedelta(seconds=1))
    await store.create_api_key(record)
    assert await _post(app_client, key) == 202
    await asyncio.sleep(1.1)
    response = await app_client.post("/webhooks/plain", json={}, headers={"St2-Api-Key": key})
    assert response.status == 403
    assert "expired" in await response.text()


async def test_a_key_put_back_whole_changes_only_what_may_change(app_client):
    """`st2 apikey disable` GETs the key and PUTs the whole object back."""
    store = app_client.server.app[RUNTIME].store
    record, key = new_api_key("sender", role=WEBHOOK, webhooks=("plain",))
    await store.create_api_key(record)
    admin = {"St2-Api-Key": app_client.admin_key}
    shown = await (await app_client.get(f"/api/v1/apikeys/{record.id}", headers=admin)).json()
    echoed = {**shown, "enabled": False, "uid": "api_key:x", "user": "someone"}
    response = await app_client.put(f"/api/v1/apikeys/{record.id}", json=echoed, headers=admin)
    assert response.status == 200, await response.text()
    assert (await response.json())["enabled"] is False
    assert await _post(app_client, key) == 403

    # A field that cannot change is refused by name, and nothing changes.
    widened = {**shown, "enabled": True, "webhooks": ["plain", "other"]}
    response = await app_client.put(f"/api/v1/apikeys/{record.id}", json=widened, headers=admin)
    assert response.status == 400
    assert "'webhooks' cannot be changed" in (await response.json())["faultstring"]
    assert not (await store.get_api_key(record.id)).enabled
