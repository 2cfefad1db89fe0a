"""The datastore through the real app: st2kv in rules and actions, /api/v1/keys in
StackStorm's shapes, secrets encrypted at rest, the encryption key's origin."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from engine.config import (
    DatastoreSettings,
    Settings,
    StoreSettings,
    load_settings,
)
from engine.errors import ConfigError
from engine.http.context import RUNTIME
from engine.model.apikeys import new_api_key
from engine.model.kv import DatastoreError
from engine.store import create_store
from engine.store.datastore import Datastore
from tests.support.app import app_client, settings_for
from tests.support.packs import pack_meta, write_pack
from tests.support.waiting import wait_execution, wait_processed

RULE = """\
name: deploy_to_target
pack: kvt
trigger: {type: core.st2.webhook, parameters: {url: deploy}}
criteria:
  trigger.body.env:
    type: equals
    pattern: "{{ st2kv.system.target_env }}"
action:
  ref: kvt.shell
  parameters:
    cmd: >-
      echo host={{ st2kv.system.host }} pw={{ st2kv.system.db_pw | decrypt_kv }}
      raw={{ st2kv.system.db_pw }} mine={{ st2kv.user.nick }}
"""


PACK_FILES = {
    "actions/shell.yaml": (
        "name: shell\nrunner_type: local-shell-cmd\nparameters:\n"
        "  cmd: {type: string, required: true}\n"
    ),
    "actions/greet.yaml": """\
        name: greet
        runner_type: local-shell-cmd
        parameters:
          cmd: {type: string, default: "echo {{ st2kv.system.greeting }}"}
        """,
}


def kv_settings(tmp_path: Path, *, auth: bool = False) -> Settings:
    packs = tmp_path / "packs"
    if not packs.exists():
        write_pack(packs, "kvt", PACK_FILES, meta=pack_meta("kvt", description="datastore tests"))
    return settings_for(
        tmp_path,
        rules={"deploy": RULE},
        packs=[packs],
        roles=("api", "rules", "actions"),
        auth=auth,
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return kv_settings(tmp_path)


async def put(client, name: str, **body):
    reply = await client.put(f"/api/v1/keys/{name}", json={"name": name, **body})
    assert reply.status == 200, await reply.text()
    return await reply.json()


# --- st2kv in rules and actions ------------------------------------------------------


async def test_rule_criteria_and_parameters_use_st2kv(client):
    await put(client, "target_env", scope="system", user=None, value="prod")
    await put(client, "host", value="db1.internal")
    await put(client, "db_pw", value="hunter2", secret=True)
    await put(client, "nick", scope="user", value="mona")  # the rule user's key

    other = await (await client.post("/webhooks/deploy", json={"env": "dev"})).json()
    await wait_processed(client, other["id"])
    assert await (await client.get("/api/v1/executions")).json() == []

    accepted = await (await client.post("/webhooks/deploy", json={"env": "prod"})).json()
    execution = await wait_execution(client, trigger_instance=accepted["id"])
    assert execution["status"] == "succeeded", execution["result"]
    stdout = execution["result"]["stdout"]
    assert stdout.startswith("host=db1.internal pw=hunter2 raw=gAAAA")
    assert stdout.endswith("mine=mona")
    # Without decrypt_kv the secret is its ciphertext, never the plaintext.
    raw = stdout.split("raw=")[1].split()[0]
    assert "hunter2" not in raw

    # A changed key is seen by the next event (the API write drops the worker's copy).
    await put(client, "target_env", value="staging")
    again = await (await client.post("/webhooks/deploy", json={"env": "staging"})).json()
    assert (await wait_execution(client, trigger_instance=again["id"]))["status"] == "succeeded"


async def test_action_metadata_templates_read_st2kv(client):
    await put(client, "greeting", value="hello from the datastore")
    created = await client.post("/api/v1/executions", json={"action": "kvt.greet"})
    assert created.status == 201
    execution = await wait_execution(client, action="kvt.greet")
    assert execution["result"]["stdout"] == "hello from the datastore"


async def test_secret_is_encrypted_at_rest(client, tmp_path):
    await put(client, "db_pw", value="hunter2-very-secret", secret=True)
    stored = await client.app[RUNTIME].store.get_kv("db_pw")
    assert stored.secret and "hunter2" not in stored.value
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("hookyard.db*"))
    assert b"db_pw" in raw and b"hunter2-very-secret" not in raw
    key_file = tmp_path / "data" / "datastore.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert Fernet(key_file.read_text().strip()).decrypt(stored.value.encode()) == (
        b"hunter2-very-secret"
    )


# --- /api/v1/keys shapes -------------------------------------------------------------


async def test_set_get_list_delete_in_stackstorm_shapes(client):
    body = await put(
        client,
        "k",
        scope="system",
        user=None,
        value="v",
        secret=None,
        encrypted=None,
        ttl=None,
    )
    assert {k: body[k] for k in ("name", "value", "scope", "expire_timestamp")} == {
        "name": "k",
        "value": "v",
        "scope": "st2kv.system",
        "expire_timestamp": None,
    }
    got = await (await client.get("/api/v1/keys/k?decrypt=false&scope=system")).json()
    assert (got["name"], got["value"], got["secret"], got["encrypted"]) == ("k", "v", False, False)

    await put(client, "k.ttl", value="soon", ttl=120)
    await put(client, "mine", scope="user", user="bob", value="b")
    listing = await client.get("/api/v1/keys/?decrypt=false&scope=all&limit=50")
    assert listing.headers["X-Total-Count"] == "3"
    items = await listing.json()
    assert [(i["name"], i["scope"], i["user"]) for i in items] == [
        ("k", "st2kv.system", None),
        ("k.ttl", "st2kv.system", None),
        ("mine", "st2kv.user", "bob"),
    ]
    assert items[1]["expire_timestamp"].endswith("Z")
    prefixed = await (await client.get("/api/v1/keys?prefix=k.&scope=system")).json()
    assert [i["name"] for i in prefixed] == ["k.ttl"]
    users = await (await client.get("/api/v1/keys?scope=user")).json()
    assert [i["name"] for i in users] == ["mine"]
    paged = await client.get("/api/v1/keys", params={"limit": "1", "offset": "1"})
    assert paged.headers["X-Total-Count"] == "3"
    assert [i["name"] for i in await paged.json()] == ["k.ttl"]

    # st2 key delete: GET first, then DELETE with the reply's name.
    assert (await client.delete("/api/v1/keys/k?scope=system")).status == 204
    missing = await client.get("/api/v1/keys/k?scope=system")
    assert missing.status == 404 and "k" in (await missing.json())["faultstring"]
    gone = await client.delete("/api/v1/keys/k?scope=system")
    assert gone.status == 404 and "faultstring" in await gone.json()
    user_key = await (await client.get("/api/v1/keys/mine?scope=user&user=bob")).json()
    assert user_key["value"] == "b"
    assert (await client.delete("/api/v1/keys/mine?scope=st2kv.user&user=bob")).status == 204


async def test_secret_shapes_and_decrypt(client):
    body = await put(client, "pw", value="hunter2", secret=True)
    assert body["value"] != "hunter2" and body["secret"] is True
    hidden = await (await client.get("/api/v1/keys/pw")).json()
    assert (hidden["value"], hidden["encrypted"]) == (body["value"], True)
    shown = await (await client.get("/api/v1/keys/pw?decrypt=true")).json()
    assert (shown["value"], shown["encrypted"], shown["secret"]) == ("hunter2", False, True)
    listed = await (await client.get("/api/v1/keys?decrypt=true")).json()
    assert listed[0]["value"] == "hunter2"
    # --encrypted: the client sends a ciphertext of this datastore; stored as it is.
    copied = await put(client, "pw2", value=hidden["value"], encrypted=True)
    assert copied["secret"] is True and copied["value"] == hidden["value"]
    revealed = await (await client.get("/api/v1/keys/pw2?decrypt=true")).json()
    assert revealed["value"] == "hunter2"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"value": "v", "scope": "global"}, "unknown datastore scope"),
        ({"value": 5}, "must be a string"),
        ({"scope": "system"}, "'value' is required"),
        ({"value": "v", "ttl": -5}, "ttl"),
        ({"value": "v", "secret": "yes"}, "'secret' must be true or false"),
        ({"value": "v", "color": "red"}, "unknown field 'color'"),
        ({"value": "not-a-ciphertext", "encrypted": True}, "cannot decrypt"),
    ],
)
async def test_bad_key_set_is_400_with_faultstring(client, body, message):
    # A key exists, so --encrypted has a key to check the ciphertext with.
    await put(client, "seed", value="s", secret=True)
    reply = await client.put("/api/v1/keys/bad", json=body)
    assert reply.status == 400
    assert message in (await reply.json())["faultstring"]
    assert (await client.get("/api/v1/keys/bad")).status == 404


async def test_writing_and_revealing_secrets_need_an_admin_key(tmp_path):
    async with app_client(kv_settings(tmp_path, auth=True)) as c:
        store = c.app[RUNTIME].store
        admin, admin_key = new_api_key("root", admin=True)
        plain, plain_key = new_api_key("ci")
        await store.create_api_key(admin)
        await store.create_api_key(plain)
        as_plain = {"St2-Api-Key": plain_key}
        # Writing the datastore changes what every rule sees: admin only.
        refused_write = await c.put(
            "/api/v1/keys/pw", json={"value": "hunter2", "secret": True}, headers=as_plain
        )
        assert refused_write.status == 403
        reply = await c.put(
            "/api/v1/keys/pw",
            json={"value": "hunter2", "secret": True},
            headers={"St2-Api-Key": admin_key},
        )
        assert reply.status == 200
        assert (await c.get("/api/v1/keys/pw", headers=as_plain)).status == 200
        refused = await c.get("/api/v1/keys/pw?decrypt=true", headers=as_plain)
        assert refused.status == 403 and "admin" in (await refused.json())["faultstring"]
        allowed = await c.get("/api/v1/keys/pw?decrypt=true", headers={"St2-Api-Key": admin_key})
        assert (await allowed.json())["value"] == "hunter2"
        assert (await c.get("/api/v1/keys/pw")).status == 401


# --- the encryption key's origin ---------------------------------------------------------


async def open_datastore(settings: Settings):
    store = create_store(settings.store, settings.resolve_path("."))
    await store.open()
    return store, Datastore(store, settings)


async def test_generated_key_file_is_announced_and_reused(tmp_path, caplog):
    settings = Settings(
        store=StoreSettings(url=f"sqlite:///{tmp_path}/h.db"), base_dir=str(tmp_path)
    )
    store, datastore = await open_datastore(settings)
    try:
        with caplog.at_level(logging.WARNING, logger="engine.secrets.encryption"):
            await datastore.set("pw", "hunter2", secret=True)
        assert any("generated a datastore encryption key" in r.message for r in caplog.records)
        key_file = tmp_path / "data" / "datastore.key"
        assert key_file.exists() and key_file.read_text() not in caplog.text
        # Another process (a new Datastore) reads the same file and decrypts.
        again = Datastore(store, settings)
        assert again.reveal(await again.get("pw")) == "hunter2"
    finally:
        await store.close()


async def test_configured_key_from_the_environment_wins(tmp_path):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    environ = {
        "HOOKYARD_STORE__URL": f"sqlite:///{tmp_path}/h.db",
        "HOOKYARD_DATASTORE__ENCRYPTION_KEY": old,
    }
    settings = load_settings(None, environ=environ).replace(base_dir=str(tmp_path))
    assert settings.datastore.encryption_key == old
    store, datastore = await open_datastore(settings)
    try:
        stored = await datastore.set("pw", "hunter2", secret=True)
        assert not (tmp_path / "data" / "datastore.key").exists()
        assert Fernet(old.encode()).decrypt(stored.value.encode()) == b"hunter2"
        # Rotation: a new first key encrypts, the old one still decrypts.
        rotated = Datastore(store, settings.replace(**{"datastore.encryption_key": f"{new},{old}"}))
        assert rotated.reveal(await rotated.get("pw")) == "hunter2"
        wrong = Datastore(store, settings.replace(**{"datastore.encryption_key": new}))
        with pytest.raises(DatastoreError, match="another key"):
            wrong.reveal(await wrong.get("pw"))
        broken = Datastore(store, settings.replace(**{"datastore.encryption_key": "nope"}))
        with pytest.raises(ConfigError, match="not a Fernet key"):
            await broken.set("x", "y", secret=True)
    finally:
        await store.close()


async def test_reading_a_secret_without_any_key_says_where_the_key_should_be(tmp_path):
    key = Fernet.generate_key().decode()
    settings = Settings(
        store=StoreSettings(url=f"sqlite:///{tmp_path}/h.db"),
        datastore=DatastoreSettings(encryption_key=key),
        base_dir=str(tmp_path),
    )
    store, datastore = await open_datastore(settings)
    try:
        await datastore.set("pw", "hunter2", secret=True)
        keyless = Datastore(store, settings.replace(**{"datastore.encryption_key": ""}))
        with pytest.raises(DatastoreError, match="no datastore encryption key"):
            keyless.reveal(await keyless.get("pw"))
        # Templates still get the ciphertext; only decrypt_kv would fail.
        view = await keyless.st2kv("hookyard")
        assert str(view["system"]["pw"]) == (await keyless.get("pw")).value
    finally:
        await store.close()
