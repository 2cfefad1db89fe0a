"""Secret action parameters are sealed at rest: the executions row (read with sqlite3 on
the real file) never holds them, the action still receives them, the API masks them."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path

from engine.config import DatastoreSettings, Settings
from engine.http.context import RUNTIME
from engine.model.records import (
    ENFORCEMENT_SUCCEEDED,
    PROCESSED,
    EnforcementOutcome,
    NewExecution,
    NewTriggerInstance,
)
from engine.secrets.sealing import SEALED
from tests.support.app import app_client, settings_for
from tests.support.packs import pack_meta, write_pack
from tests.support.waiting import wait_execution

SECRET = "tok-5f2a9c-secret"
OTHER_SECRET = "api-8d1e77-secret"


VAULT_FILES = {
    "actions/digest.yaml": """\
        ---
        name: digest
        runner_type: python-script
        entry_point: digest.py
        parameters:
          token: {type: string, secret: true, required: true}
          who: {type: string}
        """,
    "actions/digest.py": """\
        import hashlib

        from st2common.runners.base_action import Action


        class Digest(Action):
            def run(self, token, who=None):
                print("token is", token)
                return {"sha256": hashlib.sha256(token.encode()).hexdigest(), "who": who}
        """,
    "rules/on_digest.yaml": """\
        ---
        name: on_digest
        pack: vault
        trigger: {type: core.st2.webhook, parameters: {url: digest}}
        action:
          ref: vault.digest
          parameters:
            token: "{{ trigger.body.token }}"
            who: "{{ trigger.body.who }}"
        """,
}


def vault_settings(tmp_path: Path, roles=("api", "rules", "actions")) -> Settings:
    packs = tmp_path / "packs"
    if not packs.exists():
        write_pack(packs, "vault", VAULT_FILES, meta=pack_meta("vault", description="secret tests"))
    return settings_for(
        tmp_path,
        packs=[packs],
        roles=roles,
        # auth off: about storage, not auth
        datastore=DatastoreSettings(key_file=str(tmp_path / "keys" / "datastore.key")),
    )


def stored_row(tmp_path: Path, execution_id: str) -> str:
    with sqlite3.connect(tmp_path / "hookyard.db") as conn:
        row = conn.execute("SELECT * FROM executions WHERE id = ?", (execution_id,)).fetchone()
    assert row is not None
    return " ".join(str(column) for column in row)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_api_execution_stores_the_secret_sealed_and_the_action_gets_it(tmp_path):
    async with app_client(vault_settings(tmp_path)) as client:
        created = await client.post(
            "/api/v1/executions",
            json={"action": "vault.digest", "parameters": {"token": SECRET, "who": "ann"}},
        )
        assert created.status == 201
        body = await created.json()
        assert body["parameters"] == {"token": "********", "who": "ann"}
        done = await wait_execution(client, body["id"])
    assert done["status"] == "succeeded", done["result"]
    # The action received the real value: its digest is the secret's.
    assert done["result"]["result"] == {"sha256": sha256(SECRET), "who": "ann"}
    assert "token is ********" in done["result"]["stdout"]
    row = stored_row(tmp_path, body["id"])
    assert SECRET not in row and SEALED in row and "ann" in row


async def test_rule_execution_stores_the_secret_sealed(tmp_path):
    async with app_client(vault_settings(tmp_path)) as client:
        accepted = await (
            await client.post("/webhooks/digest", json={"token": OTHER_SECRET, "who": "bo"})
        ).json()
        for _ in range(300):
            listing = await client.get(
                "/api/v1/executions", params={"trigger_instance": accepted["id"]}
            )
            items = await listing.json()
            if items:
                break
            await asyncio.sleep(0.03)
        done = await wait_execution(client, items[0]["id"])
    assert done["status"] == "succeeded", done["result"]
    assert done["result"]["result"]["sha256"] == sha256(OTHER_SECRET)
    assert done["parameters"]["token"] == "********"
    assert OTHER_SECRET not in stored_row(tmp_path, done["id"])


async def test_a_sealed_secret_without_its_key_fails_the_run_naming_the_parameter(tmp_path):
    async with app_client(vault_settings(tmp_path, roles=("api",))) as c:
        created = await (
            await c.post(
                "/api/v1/executions", json={"action": "vault.digest", "parameters": {"token": "x"}}
            )
        ).json()
    (tmp_path / "keys" / "datastore.key").unlink()  # the key the value was sealed with
    async with app_client(vault_settings(tmp_path)) as client:
        done = await wait_execution(client, created["id"])
    assert done["status"] == "failed"
    assert "secret parameter 'token' cannot be unsealed" in done["result"]["error"]


async def test_an_absent_secret_is_stored_as_given(tmp_path):
    async with app_client(vault_settings(tmp_path, roles=("api",))) as c:
        record = await c.app[RUNTIME].store.create_execution(
            NewExecution("vault.digest", {"token": None, "who": "cy"})
        )
    assert record.parameters == {"token": None, "who": "cy"}
    assert not (tmp_path / "keys" / "datastore.key").exists()  # no secret, no key needed


async def test_enforcements_recorded_directly_are_sealed_too(tmp_path):
    """record_enforcements (one instance) seals as record_decisions (a batch) does."""
    async with app_client(vault_settings(tmp_path, roles=("api",))) as c:
        store = c.app[RUNTIME].store
        await store.add_trigger_instance(NewTriggerInstance("core.st2.webhook", {"n": 1}))
        [instance] = await store.claim_trigger_instances(1, 30)
        outcome = EnforcementOutcome(
            rule_ref="vault.on_digest",
            status=ENFORCEMENT_SUCCEEDED,
            execution=NewExecution("vault.digest", {"token": SECRET}),
        )
        await store.record_enforcements(instance.id, instance.lease_token, [outcome], PROCESSED)
        [execution] = (await store.list_executions({}, 10, 0)).items
    assert execution.parameters["token"][SEALED]
    assert c.app[RUNTIME].sealer.unseal(execution.parameters) == {"token": SECRET}
    assert SECRET not in stored_row(tmp_path, execution.id)
