"""Who may answer an inquiry: auth on, keys of each role, an ask's own `users` and `roles`
(StackStorm: with either listed, only those may respond). The real app on a real SQLite
file with the actions role running `core.ask`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from engine.config import Settings
from engine.http.context import RUNTIME
from engine.model.apikeys import new_api_key
from engine.model.roles import ADMIN, OBSERVER, OPERATOR, Grants
from tests.support.app import settings_for


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(tmp_path, roles=("api", "actions"), auth=True)


@pytest.fixture
def after_start(capsys):
    async def store_keys(client) -> None:
        capsys.readouterr()  # the first admin key, not used here
        client.keys = {}
        for name, role in (
            ("root", ADMIN),
            ("watcher", OBSERVER),
            ("alice", OPERATOR),
            ("bob", OPERATOR),
        ):
            grants = Grants(packs=("core",)) if role == OPERATOR else Grants()
            record, key = new_api_key(name, role=role, grants=grants)
            await client.app[RUNTIME].store.create_api_key(record)
            client.keys[name] = {"St2-Api-Key": key}

    return store_keys


async def ask(client, **parameters) -> str:
    reply = await client.post(
        "/api/v1/executions",
        json={"action": "core.ask", "parameters": parameters},
        headers=client.keys["root"],
    )
    assert reply.status == 201, await reply.text()
    ask_id = (await reply.json())["id"]
    deadline = time.monotonic() + 20
    while True:
        got = await client.get(f"/api/v1/inquiries/{ask_id}", headers=client.keys["root"])
        if got.status == 200:
            return ask_id
        assert time.monotonic() < deadline, await got.text()
        await asyncio.sleep(0.02)


async def respond(client, ask_id: str, as_key: str | None):
    headers = client.keys[as_key] if as_key else {}
    return await client.put(
        f"/api/v1/inquiries/{ask_id}",
        json={"id": ask_id, "response": {"continue": True}},
        headers=headers,
    )


async def still_pending(client, ask_id: str) -> bool:
    got = await client.get(f"/api/v1/executions/{ask_id}", headers=client.keys["root"])
    return (await got.json())["status"] == "pending"


async def test_without_a_key_nothing_is_listed_or_answered(client) -> None:
    ask_id = await ask(client)
    assert (await client.get("/api/v1/inquiries")).status == 401
    refused = await respond(client, ask_id, None)
    assert refused.status == 401
    assert "faultstring" in await refused.json()
    assert await still_pending(client, ask_id)


async def test_an_observer_reads_inquiries_but_cannot_answer(client) -> None:
    ask_id = await ask(client)
    listed = await client.get("/api/v1/inquiries", headers=client.keys["watcher"])
    assert [item["id"] for item in await listed.json()] == [ask_id]
    refused = await respond(client, ask_id, "watcher")
    assert refused.status == 403
    assert "observer" in (await refused.json())["faultstring"]
    assert await still_pending(client, ask_id)


async def test_only_the_listed_users_may_answer(client) -> None:
    ask_id = await ask(client, users=["alice"])
    refused = await respond(client, ask_id, "bob")
    assert refused.status == 403
    message = (await refused.json())["faultstring"]
    assert "'bob'" in message and "only users 'alice' may respond" in message
    assert await still_pending(client, ask_id)
    assert (await respond(client, ask_id, "alice")).status == 200
    assert not await still_pending(client, ask_id)


async def test_only_holders_of_the_listed_roles_may_answer(client) -> None:
    ask_id = await ask(client, roles=["admin"])
    refused = await respond(client, ask_id, "alice")
    assert refused.status == 403
    assert "only roles 'admin' may respond" in (await refused.json())["faultstring"]
    assert (await respond(client, ask_id, "root")).status == 200


async def test_with_no_users_or_roles_any_operator_answers(client) -> None:
    ask_id = await ask(client)
    assert (await respond(client, ask_id, "bob")).status == 200
    got = await client.get(f"/api/v1/executions/{ask_id}", headers=client.keys["root"])
    assert (await got.json())["result"]["response"] == {"continue": True}
