"""A secret datastore value a workflow decrypts (Orquesta's `st2kv(..., decrypt=true)`,
a chain's `| decrypt_kv`) and publishes into its context is sealed in the stored run
state: the raw SQLite file (and its WAL) and the PostgreSQL row never hold it."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import asyncpg
import pytest

from engine.config import DatastoreSettings, Settings, StoreSettings, WorkerSettings
from tests.support.app import FAST_POLL, settings_for
from tests.support.waiting import wait_execution

SECRET = "pw-7c1d0e-plaintext"
PLAIN = "hello-3b9f-visible"

WORKFLOWS = {
    # Decrypted, published, used by a later task: the state holds it between steps.
    "reveal": """\
        version: 1.0
        tasks:
          fetch:
            action: core.noop
            next:
              - publish:
                  - token: <% st2kv('system.api_token', decrypt => true) %>
                do: use
          use:
            action: core.noop
        output:
          - length: <% len(ctx(token)) %>
        """,
    # No secret read: the state stays plain (readable for debugging, as before).
    "greet": """\
        version: 1.0
        tasks:
          fetch:
            action: core.noop
            next:
              - publish:
                  - greeting: <% st2kv('system.greeting') %>
        output:
          - greeting: <% ctx(greeting) %>
        """,
}

CHAIN = """\
chain:
  - name: fetch
    ref: core.noop
    publish:
      token: "{{ st2kv.system.api_token | decrypt_kv }}"
    on-success: use
  - name: use
    ref: core.noop
"""


def _write_pack(packs: Path) -> None:
    actions = packs / "keeper" / "actions"
    (actions / "workflows").mkdir(parents=True)
    (packs / "keeper" / "pack.yaml").write_text(
        "name: keeper\nversion: 1.0.0\ndescription: tests\nauthor: t\nemail: t@example.com\n"
    )
    for name, text in WORKFLOWS.items():
        (actions / "workflows" / f"{name}.yaml").write_text(textwrap.dedent(text))
        (actions / f"{name}.yaml").write_text(
            f"name: {name}\nrunner_type: orquesta\nentry_point: workflows/{name}.yaml\n"
        )
    (actions / "workflows" / "chain_reveal.yaml").write_text(CHAIN)
    (actions / "chain_reveal.yaml").write_text(
        "name: chain_reveal\nrunner_type: action-chain\n"
        "entry_point: workflows/chain_reveal.yaml\n"
        "parameters:\n  display_published: {type: boolean, default: false}\n"
    )


@pytest.fixture
def settings(tmp_path: Path, store_url: str) -> Settings:
    _write_pack(tmp_path / "packs")
    return settings_for(
        tmp_path,
        store=StoreSettings(url=store_url),
        packs=[tmp_path / "packs"],
        roles=("api", "actions", "workflows"),
        workers=WorkerSettings(poll_interval=FAST_POLL),
        datastore=DatastoreSettings(key_file=str(tmp_path / "keys" / "datastore.key")),
    )


async def _keys(client) -> None:
    for name, value, secret in (("api_token", SECRET, True), ("greeting", PLAIN, False)):
        reply = await client.put(
            f"/api/v1/keys/{name}", json={"name": name, "value": value, "secret": secret}
        )
        assert reply.status in (200, 201), await reply.text()


async def _run(client, action: str) -> dict:
    reply = await client.post("/api/v1/executions", json={"action": action})
    assert reply.status == 201, await reply.text()
    return await wait_execution(client, (await reply.json())["id"], timeout=60)


async def _stored_state(store_url: str, execution_id: str) -> str:
    if store_url.startswith("sqlite:///"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            [(state,)] = conn.execute(
                "SELECT state FROM workflow_runs WHERE execution_id = ?", (execution_id,)
            ).fetchall()
        return state
    conn = await asyncpg.connect(store_url)
    try:
        return await conn.fetchval(
            "SELECT state::text FROM workflow_runs WHERE execution_id = $1", execution_id
        )
    finally:
        await conn.close()


def _raw_sqlite_bytes(store_url: str) -> bytes:
    """The database file and its write-ahead log, as bytes on disk."""
    path = Path(store_url.removeprefix("sqlite:///"))
    return b"".join(
        candidate.read_bytes()
        for candidate in (path, path.with_name(path.name + "-wal"))
        if candidate.exists()
    )


async def _all_pg_rows(store_url: str) -> str:
    conn = await asyncpg.connect(store_url)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
        texts = []
        for row in tables:
            rows = await conn.fetch(f'SELECT t::text AS line FROM "{row["tablename"]}" t')
            texts.extend(r["line"] for r in rows)
        return "\n".join(texts)
    finally:
        await conn.close()


async def _nowhere_in_clear(store_url: str) -> None:
    if store_url.startswith("sqlite:///"):
        assert SECRET.encode() not in _raw_sqlite_bytes(store_url)
    else:
        assert SECRET not in await _all_pg_rows(store_url)


async def test_a_decrypted_secret_published_by_orquesta_is_sealed_at_rest(
    client, store_url: str
) -> None:
    await _keys(client)
    workflow = await _run(client, "keeper.reveal")
    assert workflow["status"] == "succeeded", workflow["result"]
    # It was really decrypted (the state had it, and the workflow used it).
    assert workflow["result"] == {"output": {"length": len(SECRET)}}
    state = await _stored_state(store_url, workflow["id"])
    assert SECRET not in state and "$hookyard_secret" in state
    await _nowhere_in_clear(store_url)


async def test_a_chain_publishing_a_decrypted_secret_is_sealed_at_rest(
    client, store_url: str
) -> None:
    await _keys(client)
    chain = await _run(client, "keeper.chain_reveal")
    assert chain["status"] == "succeeded", chain["result"]
    state = await _stored_state(store_url, chain["id"])
    assert SECRET not in state and "$hookyard_secret" in state
    await _nowhere_in_clear(store_url)


async def test_a_workflow_that_decrypts_nothing_keeps_a_plain_state(client, store_url: str) -> None:
    await _keys(client)
    workflow = await _run(client, "keeper.greet")
    assert workflow["status"] == "succeeded", workflow["result"]
    assert workflow["result"] == {"output": {"greeting": PLAIN}}
    state = await _stored_state(store_url, workflow["id"])
    assert PLAIN in state and "$hookyard_secret" not in state
