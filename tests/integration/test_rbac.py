"""Who may do what on the API: roles (admin, operator, observer, webhook) and grants.

The real app (aiohttp test client) on a real SQLite file, with auth on and the API role
only (executions stay `requested`, so they can be cancelled); keys are made through the
store, the REST API or the `hookyard apikey` CLI in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import Settings
from engine.http.context import RUNTIME
from engine.model.apikeys import new_api_key
from engine.model.records import NewExecution, NewTriggerInstance
from engine.model.roles import ADMIN, OBSERVER, OPERATOR, Grants
from tests.support.app import REPO_ROOT, app_client, settings_for
from tests.support.packs import pack_meta, write_pack


def roles_settings(tmp_path: Path) -> Settings:
    packs = tmp_path / "packs"
    if not packs.exists():
        write_pack(
            packs,
            "examples",
            {"actions/hello.yaml": "name: hello\nrunner_type: noop\nparameters: {}\n"},
            meta=pack_meta("examples", description="role tests"),
        )
    return settings_for(tmp_path, packs=[packs], auth=True)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return roles_settings(tmp_path)


class Keys:
    """Keys of each role, stored before the test; `headers(name)` to send one."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}

    def headers(self, name: str) -> dict[str, str]:
        return {"St2-Api-Key": self.keys[name]}


@pytest.fixture
def after_start(capsys):
    async def store_keys(client) -> None:
        capsys.readouterr()  # the first admin key, not used here
        store = client.app[RUNTIME].store
        client.k = Keys()
        for name, role, grants in (
            ("root", ADMIN, Grants()),
            ("watcher", OBSERVER, Grants()),
            ("ci", OPERATOR, Grants(packs=("examples",))),
            ("deployer", OPERATOR, Grants(packs=("examples",))),
            ("noopy", OPERATOR, Grants(actions=("core.n*",))),
            ("alice", OPERATOR, Grants()),
            ("bob", OPERATOR, Grants()),
        ):
            record, key = new_api_key(name, role=role, grants=grants)
            await store.create_api_key(record)
            client.k.keys[name] = key

    return store_keys


async def fault(response) -> str:
    return (await response.json())["faultstring"]


async def run(client, as_key: str, action: str):
    return await client.post(
        "/api/v1/executions",
        json={"action": action, "parameters": {}, "user": None},
        headers=client.k.headers(as_key),
    )


# --- observer ----------------------------------------------------------------------------


async def test_observer_reads_everything_but_cannot_run_cancel_reemit_or_write(client):
    store = client.app[RUNTIME].store
    execution = await store.create_execution(
        NewExecution(action="examples.hello", parameters={}, context={"user": "watcher"})
    )
    instance = await store.add_trigger_instance(
        NewTriggerInstance(trigger="core.st2.webhook", payload={"a": 1}, webhook="hook")
    )
    watcher = client.k.headers("watcher")
    for path in (
        "/api/v1/executions",
        f"/api/v1/executions/{execution.id}",
        "/api/v1/triggerinstances",
        "/api/v1/actions",
        "/api/v1/rules",
        "/api/v1/keys?scope=all",
    ):
        response = await client.get(path, headers=watcher)
        assert response.status == 200, (path, await response.text())

    refused = {
        "run": await run(client, "watcher", "examples.hello"),
        "cancel": await client.delete(f"/api/v1/executions/{execution.id}", headers=watcher),
        "cancel by PUT": await client.put(
            f"/api/v1/executions/{execution.id}", json={"status": "canceled"}, headers=watcher
        ),
        "re-emit": await client.post(
            f"/api/v1/triggerinstances/{instance.id}/re_emit", data="null", headers=watcher
        ),
        "write a key": await client.put(
            "/api/v1/keys/x", json={"name": "x", "value": "1"}, headers=watcher
        ),
        "write its own user key": await client.put(
            "/api/v1/keys/x", json={"name": "x", "value": "1", "scope": "user"}, headers=watcher
        ),
        "delete a key": await client.delete("/api/v1/keys/x", headers=watcher),
    }
    for what, response in refused.items():
        assert response.status == 403, what
        message = await fault(response)
        assert message.startswith("key 'watcher' (role observer) may not "), (what, message)
        assert "observer role only reads" in message, (what, message)
    # Nothing happened: still one execution, not canceled; one trigger instance.
    assert (await store.get_execution(execution.id)).status == "requested"
    listed = await client.get("/api/v1/triggerinstances", headers=watcher)
    assert listed.headers["X-Total-Count"] == "1"


async def test_observer_and_operator_cannot_manage_keys_or_reload(client):
    for name in ("watcher", "ci"):
        headers = client.k.headers(name)
        for response in (
            await client.get("/api/v1/apikeys", headers=headers),
            await client.post("/api/v1/apikeys", json={"name": "x"}, headers=headers),
            await client.post("/api/v1/reload", headers=headers),
        ):
            assert response.status == 403
            assert "this needs an admin key" in await fault(response)
            assert f"key {name!r}" in await fault(response)


# --- operator: running -------------------------------------------------------------------


async def test_operator_runs_its_granted_pack_but_not_core_local(client):
    allowed = await run(client, "ci", "examples.hello")
    assert allowed.status == 201, await allowed.text()
    assert (await allowed.json())["context"]["user"] == "ci"

    refused = await run(client, "ci", "core.local")
    assert refused.status == 403
    assert await fault(refused) == (
        "key 'ci' (role operator) may not run core.local: no grant for pack 'core' or "
        "action 'core.local' (grants: examples)"
    )
    executions = await client.get("/api/v1/executions", headers=client.k.headers("root"))
    assert executions.headers["X-Total-Count"] == "1"


async def test_operator_action_grants_match_by_glob(client):
    assert (await run(client, "noopy", "core.noop")).status == 201
    for action in ("core.local", "examples.hello"):
        refused = await run(client, "noopy", action)
        assert refused.status == 403, action
        assert "(grants: core.n*)" in await fault(refused)


async def test_observer_cannot_run_even_what_an_operator_could(client):
    refused = await run(client, "watcher", "examples.hello")
    assert refused.status == 403
    assert "key 'watcher' (role observer)" in await fault(refused)


# --- operator: its own executions ---------------------------------------------------------


async def test_operator_cancels_its_own_execution_but_not_another_ones(client):
    own = await (await run(client, "ci", "examples.hello")).json()
    other = await (await run(client, "deployer", "examples.hello")).json()
    ci = client.k.headers("ci")

    refused = await client.delete(f"/api/v1/executions/{other['id']}", headers=ci)
    assert refused.status == 403
    assert await fault(refused) == (
        f"key 'ci' (role operator) may not cancel execution {other['id']}: it was requested "
        "by user 'deployer', not by 'ci'; an operator controls only its own executions"
    )
    by_put = await client.put(
        f"/api/v1/executions/{other['id']}", json={"status": "canceled"}, headers=ci
    )
    assert by_put.status == 403

    canceled = await client.delete(f"/api/v1/executions/{own['id']}", headers=ci)
    assert canceled.status == 200 and (await canceled.json())["status"] == "canceled"
    store = client.app[RUNTIME].store
    assert (await store.get_execution(other["id"])).status == "requested"
    # An admin cancels anyone's.
    by_admin = await client.delete(
        f"/api/v1/executions/{other['id']}", headers=client.k.headers("root")
    )
    assert by_admin.status == 200 and (await by_admin.json())["status"] == "canceled"


async def test_operator_cannot_claim_another_user_when_running(client):
    response = await client.post(
        "/api/v1/executions",
        json={"action": "examples.hello", "user": "deployer", "context": {"user": "deployer"}},
        headers=client.k.headers("ci"),
    )
    assert response.status == 201
    created = await response.json()
    assert created["context"] == {"user": "ci"}
    # ... so it cannot then cancel deployer's executions by pretending.
    assert (
        await client.delete(
            f"/api/v1/executions/{created['id']}", headers=client.k.headers("deployer")
        )
    ).status == 403


async def test_operator_may_re_emit_an_instance(client):
    instance = await client.app[RUNTIME].store.add_trigger_instance(
        NewTriggerInstance(trigger="core.st2.webhook", payload={"a": 1}, webhook="hook")
    )
    response = await client.post(
        f"/api/v1/triggerinstances/{instance.id}/re_emit",
        data="null",
        headers={**client.k.headers("ci"), "Content-Type": "application/json"},
    )
    assert response.status == 200, await response.text()


async def test_operator_cannot_write_rules_or_outbound_subscriptions(client):
    ci = client.k.headers("ci")
    for response in (
        await client.post("/api/v1/rules", json={"name": "r"}, headers=ci),
        await client.delete("/api/v1/rules/t.r", headers=ci),
        await client.post(
            "/api/v1/events/webhooks", json={"url": "http://example.com"}, headers=ci
        ),
    ):
        assert response.status == 403
        assert "this needs an admin key" in await fault(response)


# --- the datastore ---------------------------------------------------------------------------


async def test_user_scoped_values_of_one_user_are_invisible_to_another(client):
    alice, bob = client.k.headers("alice"), client.k.headers("bob")
    stored = await client.put(
        "/api/v1/keys/token",
        json={"name": "token", "value": "alice-only", "scope": "user", "user": None},
        headers=alice,
    )
    assert stored.status == 200, await stored.text()
    assert (await stored.json())["user"] == "alice"
    # Alice reads her own without naming herself (the caller is the default user).
    own = await client.get("/api/v1/keys/token?scope=user", headers=alice)
    assert own.status == 200 and (await own.json())["value"] == "alice-only"

    # Bob: his own user scope has no such key; naming alice is refused; lists omit it.
    assert (await client.get("/api/v1/keys/token?scope=user", headers=bob)).status == 404
    named = await client.get("/api/v1/keys/token?scope=user&user=alice", headers=bob)
    assert named.status == 403
    assert await fault(named) == (
        "key 'bob' (role operator) may not read user-scoped values of user 'alice': only "
        "that user ('alice') or an admin key may"
    )
    listed = await client.get("/api/v1/keys/?decrypt=false&scope=all&limit=50", headers=bob)
    assert listed.status == 200 and "alice-only" not in await listed.text()
    assert listed.headers["X-Total-Count"] == "0"
    assert (await client.get("/api/v1/keys?scope=user&user=alice", headers=bob)).status == 403
    overwrite = await client.put(
        "/api/v1/keys/token",
        json={"name": "token", "value": "bob's", "scope": "user", "user": "alice"},
        headers=bob,
    )
    assert overwrite.status == 403
    assert (
        await client.delete("/api/v1/keys/token?scope=user&user=alice", headers=bob)
    ).status == 403
    watcher_list = await client.get("/api/v1/keys?scope=all", headers=client.k.headers("watcher"))
    assert "alice-only" not in await watcher_list.text()

    # An admin sees and still has alice's value.
    as_admin = await client.get(
        "/api/v1/keys/token?scope=user&user=alice", headers=client.k.headers("root")
    )
    assert (await as_admin.json())["value"] == "alice-only"


async def test_system_values_are_written_by_admins_only(client):
    refused = await client.put(
        "/api/v1/keys/flag", json={"name": "flag", "value": "1"}, headers=client.k.headers("ci")
    )
    assert refused.status == 403
    assert "system scope changes what every rule sees: admin only" in await fault(refused)
    written = await client.put(
        "/api/v1/keys/flag", json={"name": "flag", "value": "1"}, headers=client.k.headers("root")
    )
    assert written.status == 200


async def test_secret_ciphertexts_are_not_returned_to_non_admins(client):
    root = client.k.headers("root")
    stored = await client.put(
        "/api/v1/keys/pw", json={"name": "pw", "value": "hunter2", "secret": True}, headers=root
    )
    ciphertext = (await stored.json())["value"]
    assert ciphertext and ciphertext != "hunter2"
    for name in ("watcher", "ci"):
        headers = client.k.headers(name)
        got = await client.get("/api/v1/keys/pw?decrypt=false&scope=system", headers=headers)
        body = await got.json()
        assert got.status == 200 and body["value"] is None and body["encrypted"] is True
        listed = await client.get("/api/v1/keys/?scope=all", headers=headers)
        assert ciphertext not in await listed.text() and "hunter2" not in await listed.text()
        refused = await client.get("/api/v1/keys/pw?decrypt=true", headers=headers)
        assert refused.status == 403
        assert await fault(refused) == (
            f"key {name!r} (role {'observer' if name == 'watcher' else 'operator'}) may not "
            "decrypt secret 'pw' in st2kv.system: only an admin key (or, in the user scope, "
            "the value's own user) may"
        )
    assert (await (await client.get("/api/v1/keys/pw", headers=root)).json())["value"] == (
        ciphertext
    )
    revealed = await client.get("/api/v1/keys/pw?decrypt=true", headers=root)
    assert (await revealed.json())["value"] == "hunter2"


async def test_a_user_decrypts_its_own_user_scoped_secret(client):
    alice = client.k.headers("alice")
    stored = await client.put(
        "/api/v1/keys/pw",
        json={"name": "pw", "value": "s3cret", "scope": "user", "secret": True},
        headers=alice,
    )
    assert stored.status == 200 and (await stored.json())["value"] not in (None, "s3cret")
    mine = await client.get("/api/v1/keys/pw?scope=user&decrypt=true", headers=alice)
    assert (await mine.json())["value"] == "s3cret"


# --- creating keys with roles ------------------------------------------------------------------


async def test_the_api_creates_keys_with_a_role_and_grants(client):
    root = client.k.headers("root")
    created = await client.post(
        "/api/v1/apikeys",
        json={"name": "deploy-bot", "role": "operator", "grants": {"packs": ["examples"]}},
        headers=root,
    )
    assert created.status == 201, await created.text()
    body = await created.json()
    assert body["role"] == "operator"
    assert body["grants"] == {"packs": ["examples"], "actions": []}
    as_bot = {"St2-Api-Key": body["key"]}
    assert (
        await client.post("/api/v1/executions", json={"action": "examples.hello"}, headers=as_bot)
    ).status == 201

    # What st2's CLI sends (`st2 apikey create -k`: {}) has no role: the least, an observer.
    plain = await (await client.post("/api/v1/apikeys", json={}, headers=root)).json()
    assert plain["role"] == "observer" and plain["admin"] is False
    assert plain["key"].startswith("hy_") and plain["name"].startswith("st2-")

    listed = {
        k["name"]: k for k in await (await client.get("/api/v1/apikeys", headers=root)).json()
    }
    assert listed["deploy-bot"]["role"] == "operator"
    assert listed["deploy-bot"]["grants"]["packs"] == ["examples"]
    assert listed["root"]["role"] == "admin" and listed["watcher"]["role"] == "observer"

    # PUT changes the role (and replaces the grants).
    changed = await client.put(
        f"/api/v1/apikeys/{plain['id']}",
        json={"role": "operator", "grants": {"actions": ["core.noop"]}},
        headers=root,
    )
    assert changed.status == 200 and (await changed.json())["grants"]["actions"] == ["core.noop"]
    as_plain = {"St2-Api-Key": plain["key"]}
    assert (
        await client.post("/api/v1/executions", json={"action": "core.noop"}, headers=as_plain)
    ).status == 201

    for bad, message in (
        ({"name": "x", "role": "root"}, "unknown role 'root'"),
        ({"name": "x", "role": "observer", "grants": {"packs": ["core"]}}, "operator role"),
        ({"name": "x", "grants": {"packs": ["a b"]}}, "not a pack name"),
        ({"name": "x", "role": "admin", "webhooks": ["h"]}, "posting key"),
        ({"name": "hookyard", "role": "operator"}, "engine's own user"),
    ):
        response = await client.post("/api/v1/apikeys", json=bad, headers=root)
        assert response.status == 400, bad
        assert message in await fault(response), bad


def apikey_cli(store_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", "apikey", *args, "--store", store_url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )


async def test_the_cli_creates_an_operator_key_that_the_server_honours(tmp_path, capsys):
    settings = roles_settings(tmp_path)
    store_url = settings.store.url
    created = apikey_cli(
        store_url, "create", "ci", "--role", "operator", "--pack", "examples", "--action", "core.n*"
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert "role operator" in created.stderr
    refused = apikey_cli(store_url, "create", "bad", "--role", "observer", "--pack", "core")
    assert refused.returncode != 0 and "operator role" in refused.stderr

    listed = json.loads(apikey_cli(store_url, "list", "--json").stdout)
    entry = next(k for k in listed if k["name"] == "ci")
    assert entry["role"] == "operator"
    assert entry["grants"] == {"packs": ["examples"], "actions": ["core.n*"]}
    table = apikey_cli(store_url, "list").stdout
    assert "operator" in table and "examples,core.n*" in table

    async with app_client(settings) as client:
        headers = {"St2-Api-Key": key}
        for action, status in (("examples.hello", 201), ("core.noop", 201), ("core.local", 403)):
            response = await client.post(
                "/api/v1/executions", json={"action": action}, headers=headers
            )
            assert response.status == status, (action, await response.text())

    demoted = apikey_cli(store_url, "set-role", entry["id"], "--role", "observer")
    assert demoted.returncode == 0, demoted.stderr
    async with app_client(settings) as client:
        response = await client.post(
            "/api/v1/executions", json={"action": "examples.hello"}, headers={"St2-Api-Key": key}
        )
        assert response.status == 403 and "role observer" in await fault(response)
