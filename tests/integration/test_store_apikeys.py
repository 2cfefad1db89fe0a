"""API keys in the store contract: run on SQLite (a real file) and PostgreSQL (conftest.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from engine.errors import Conflict, NotFound
from engine.model.apikeys import hash_key, new_api_key
from engine.model.records import utcnow
from engine.model.roles import Grants
from engine.store import Store


async def test_create_find_and_verify_keeps_only_the_hash(store: Store, store_url: str) -> None:
    record, key = new_api_key(
        "ci", webhooks=["github/push"], triggers=["ci.deployed"], lifetime=timedelta(days=1)
    )
    assert await store.create_api_key(record) is True

    found = await store.find_api_key(key[:11])
    assert found is not None and found.id == record.id
    assert found.matches(key) and not found.matches(key[:-1] + ("x" if key[-1] != "x" else "y"))
    assert found.key_hash == hash_key(key) and key not in found.key_hash
    assert (found.webhooks, found.triggers, found.admin, found.enabled) == (
        ("github/push",),
        ("ci.deployed",),
        False,
        True,
    )
    assert found.expires_at is not None
    assert abs((found.expires_at - record.expires_at).total_seconds()) < 0.001
    assert await store.find_api_key("hy_nothere") is None
    if store_url.startswith("sqlite"):
        # The key itself is nowhere in the database file.
        files = Path(store_url.removeprefix("sqlite:///")).parent.glob("hookyard.db*")
        assert all(key.encode() not in path.read_bytes() for path in files)


async def test_list_get_and_duplicate_prefix(store: Store) -> None:
    first, _ = new_api_key("one", admin=True)
    second, _ = new_api_key("two")
    await store.create_api_key(first)
    await store.create_api_key(second)
    listed = await store.list_api_keys()
    assert [k.name for k in listed] == ["one", "two"]
    assert listed[0].admin and not listed[1].admin
    assert (await store.get_api_key(second.id)).name == "two"
    with pytest.raises(NotFound):
        await store.get_api_key("0" * 24)
    clash, _ = new_api_key("three")
    with pytest.raises(Conflict):
        await store.create_api_key(
            type(clash)(**{**clash.__dict__, "prefix": first.prefix})  # same prefix
        )


async def test_first_key_is_created_once_even_when_racing(store: Store) -> None:
    records = [new_api_key(f"admin{i}", admin=True)[0] for i in range(5)]
    created = await asyncio.gather(*(store.create_api_key(r, only_if_none=True) for r in records))
    assert created.count(True) == 1
    assert len(await store.list_api_keys()) == 1
    assert await store.create_api_key(new_api_key("more")[0], only_if_none=True) is False


async def test_extend_from_expiry_or_from_now_and_never_stays_never(store: Store) -> None:
    now = utcnow()
    live, _ = new_api_key("live", lifetime=timedelta(hours=1), now=now)
    stale, _ = new_api_key("stale", lifetime=timedelta(seconds=1), now=now - timedelta(days=2))
    forever, _ = new_api_key("forever")
    for record in (live, stale, forever):
        await store.create_api_key(record)

    extended = await store.extend_api_key(live.id, timedelta(days=1))
    gained = (extended.expires_at - live.expires_at).total_seconds()
    assert gained == pytest.approx(86400, abs=1e-3)
    revived = await store.extend_api_key(stale.id, timedelta(hours=1))
    assert not revived.expired(utcnow())
    assert revived.expires_at > now + timedelta(minutes=59)
    assert (await store.extend_api_key(forever.id, timedelta(days=1))).expires_at is None
    with pytest.raises(NotFound):
        await store.extend_api_key("0" * 24, timedelta(days=1))


async def test_disable_and_delete_one_or_many(store: Store) -> None:
    records = [new_api_key(f"k{i}")[0] for i in range(3)]
    for record in records:
        await store.create_api_key(record)
    disabled = await store.set_api_key_enabled(records[0].id, False)
    assert disabled.enabled is False
    assert (await store.find_api_key(records[0].prefix)).enabled is False
    with pytest.raises(NotFound):
        await store.set_api_key_enabled("0" * 24, False)

    assert await store.delete_api_keys([records[0].id]) == [records[0].id]
    assert await store.delete_api_keys([records[1].id, "0" * 24, records[2].id]) == [
        records[1].id,
        records[2].id,
    ]
    assert await store.list_api_keys() == []
    assert await store.delete_api_keys([records[0].id]) == []


async def test_roles_and_grants_are_stored_and_changed(store: Store) -> None:
    operator, _ = new_api_key(
        "ci", role="operator", grants=Grants(packs=("examples",), actions=("core.http", "x.*"))
    )
    observer, _ = new_api_key("watcher")
    poster, _ = new_api_key("partner", webhooks=["github"])
    for record in (operator, observer, poster):
        await store.create_api_key(record)
    found = {k.name: k for k in await store.list_api_keys()}
    assert (found["ci"].role, found["ci"].grants) == (
        "operator",
        Grants(packs=("examples",), actions=("core.http", "x.*")),
    )
    assert (found["watcher"].role, found["watcher"].grants) == ("observer", Grants())
    assert found["partner"].role == "webhook" and not found["partner"].role_migrated

    promoted = await store.set_api_key_role(observer.id, "admin", Grants())
    assert promoted.role == "admin" and promoted.admin
    assert (await store.find_api_key(observer.prefix)).admin
    narrowed = await store.set_api_key_role(operator.id, "operator", Grants(packs=("core",)))
    assert narrowed.grants == Grants(packs=("core",))
    with pytest.raises(NotFound):
        await store.set_api_key_role("0" * 24, "observer", Grants())
