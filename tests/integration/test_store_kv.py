"""The datastore (st2kv pairs) in the store contract: SQLite and PostgreSQL (conftest.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from engine.errors import NotFound
from engine.model.kv import SYSTEM_SCOPE, USER_SCOPE, KeyValuePair
from engine.model.records import utcnow
from engine.store import Store


def pair(name: str, value: str = "v", **fields) -> KeyValuePair:
    return KeyValuePair.new(name, value, now=utcnow(), **fields)


async def test_put_get_round_trip(store: Store) -> None:
    stored = await store.put_kv(pair("api.url", "https://example.test/x?y=1"))
    assert (stored.name, stored.value, stored.scope, stored.user, stored.secret) == (
        "api.url",
        "https://example.test/x?y=1",
        SYSTEM_SCOPE,
        None,
        False,
    )
    assert stored.expire_timestamp is None and stored.created_at is not None
    got = await store.get_kv("api.url")
    assert got == stored
    with pytest.raises(NotFound, match=r"api\.other"):
        await store.get_kv("api.other")


async def test_put_replaces_value_but_keeps_id_and_created_at(store: Store) -> None:
    first = await store.put_kv(pair("k", "one"))
    await asyncio.sleep(0.01)
    second = await store.put_kv(pair("k", "two", secret=True))
    assert (second.id, second.created_at) == (first.id, first.created_at)
    assert (second.value, second.secret) == ("two", True)
    assert second.updated_at > first.updated_at
    assert [p.value for p in await store.list_kv()] == ["two"]


async def test_scopes_and_users_are_separate_keys(store: Store) -> None:
    await store.put_kv(pair("token", "system"))
    await store.put_kv(pair("token", "alice's", scope=USER_SCOPE, user="alice"))
    await store.put_kv(pair("token", "bob's", scope=USER_SCOPE, user="bob"))
    assert (await store.get_kv("token")).value == "system"
    assert (await store.get_kv("token", USER_SCOPE, "alice")).value == "alice's"
    assert (await store.get_kv("token", USER_SCOPE, "bob")).user == "bob"
    with pytest.raises(NotFound):
        await store.get_kv("token", USER_SCOPE, "carol")

    everything = await store.list_kv()
    assert [(p.scope, p.user, p.value) for p in everything] == [
        (SYSTEM_SCOPE, None, "system"),
        (USER_SCOPE, "alice", "alice's"),
        (USER_SCOPE, "bob", "bob's"),
    ]
    assert [p.value for p in await store.list_kv(scope=SYSTEM_SCOPE)] == ["system"]
    assert [p.value for p in await store.list_kv(scope=USER_SCOPE)] == ["alice's", "bob's"]
    # A user narrows the user scope only; system pairs stay in an all-scope list.
    assert [p.value for p in await store.list_kv(user="bob")] == ["system", "bob's"]
    assert [p.value for p in await store.list_kv(scope=USER_SCOPE, user="bob")] == ["bob's"]

    assert await store.delete_kv("token", USER_SCOPE, "alice") is True
    assert await store.delete_kv("token", USER_SCOPE, "alice") is False
    assert (await store.get_kv("token")).value == "system"


async def test_list_by_prefix_is_literal_and_ordered(store: Store) -> None:
    for name in ("app.b", "app.a", "app_x", "apps", "other", "app%"):
        await store.put_kv(pair(name))
    assert [p.name for p in await store.list_kv(prefix="app.")] == ["app.a", "app.b"]
    # % and _ are not wildcards.
    assert [p.name for p in await store.list_kv(prefix="app_")] == ["app_x"]
    assert [p.name for p in await store.list_kv(prefix="app%")] == ["app%"]
    assert [p.name for p in await store.list_kv()] == [
        "app%",
        "app.a",
        "app.b",
        "app_x",
        "apps",
        "other",
    ]


async def test_expired_pairs_are_invisible_and_purged(store: Store) -> None:
    now = utcnow()
    await store.put_kv(pair("fresh", ttl=3600))
    gone = KeyValuePair(
        name="stale",
        value="old",
        expire_timestamp=now - timedelta(seconds=1),
        created_at=now,
        updated_at=now,
    )
    await store.put_kv(gone)
    with pytest.raises(NotFound):
        await store.get_kv("stale")
    assert [p.name for p in await store.list_kv()] == ["fresh"]
    assert await store.delete_kv("stale") is False
    fresh = await store.get_kv("fresh")
    assert fresh.expire_timestamp is not None
    assert timedelta(minutes=59) < fresh.expire_timestamp - now <= timedelta(hours=1, seconds=5)
    # Setting an expired name again makes a new live pair.
    again = await store.put_kv(pair("stale", "new"))
    assert (await store.get_kv("stale")).value == "new" and again.id != gone.id


async def test_values_survive_byte_for_byte(store: Store) -> None:
    value = 'multi\nline "quoted" ünïcødé ✓ {"json": [1, 2]} \\ back'
    await store.put_kv(pair("exotic", value))
    assert (await store.get_kv("exotic")).value == value
