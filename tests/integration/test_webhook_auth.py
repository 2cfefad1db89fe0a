"""Who may post: API keys, placements, signatures, JWT, dedupe, limits, the key API.

The real app (aiohttp test client) on a real SQLite file; keys are created through the
store or the REST API, requests signed with the providers' documented formats.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer

from engine.config import Settings, load_settings
from engine.errors import ConfigError
from engine.http.app import create_app
from engine.http.context import RUNTIME
from engine.model.apikeys import new_api_key
from engine.model.roles import OPERATOR, WEBHOOK, Grants

GITHUB_SECRET = "It's a Secret to Everybody"
JWT_SECRET = "a-shared-secret-of-at-least-32-bytes!!"

CONFIG = """\
store: {url: "sqlite:///hookyard.db"}
rules_dirs: [rules]
packs_dirs: []
roles: [api]
webhooks:
  github-push:
    auth: signature
    signature: {scheme: github, secret: "${TEST_GITHUB_SECRET}"}
    dedupe: {header: X-GitHub-Delivery}
  partner:
    auth: apikey
    apikey: {in: query, name: token}
  in-header:
    apikey: {in: header, name: X-Partner-Token}
  in-body:
    apikey: {in: body, name: api_token}
    dedupe: {source: body_hash}
  team/alerts:
    apikey: {in: path}
  tokened:
    auth: jwt
    jwt: {algorithms: [HS256], secret: "${TEST_JWT_SECRET}", audience: hookyard}
  open:
    auth: none
    max_body: 64
    response: {status: 200, body: {ok: true, got: "{{ trigger_instance.id }}"}}
"""
RULE = """\
name: plain
pack: t
trigger: {type: core.st2.webhook, parameters: {url: plain}}
action: {ref: core.noop}
"""
CUSTOM_RULE = """\
name: deployed
pack: t
trigger: {type: ci.deployed}
action: {ref: core.noop}
"""
ENV = {"TEST_GITHUB_SECRET": GITHUB_SECRET, "TEST_JWT_SECRET": JWT_SECRET}


def write_config(tmp_path: Path, text: str = CONFIG) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "plain.yaml").write_text(RULE)
    (rules / "custom.yaml").write_text(CUSTOM_RULE)
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    return load_settings(write_config(tmp_path), environ={})


@pytest.fixture
def after_start(capsys):
    async def take_first_key(client: TestClient) -> None:
        client.first_key = _first_key(capsys.readouterr().out)

    return take_first_key


def _first_key(out: str) -> str:
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith("hy_")]
    assert len(lines) == 1, out
    return lines[0]


async def make_key(client: TestClient, **fields) -> str:
    """A key stored for the test; unless told otherwise one that posts webhooks (since
    roles, an unscoped key without a role is an observer, which only reads)."""
    store = client.server.app[RUNTIME].store
    if not fields.get("webhooks") and not fields.get("triggers") and not fields.get("admin"):
        fields.setdefault("role", WEBHOOK)
    record, key = new_api_key(fields.pop("name", "test"), **fields)
    await store.create_api_key(record)
    return key


async def total(client: TestClient) -> int:
    response = await client.get(
        "/api/v1/triggerinstances", headers={"St2-Api-Key": client.first_key}
    )
    assert response.status == 200
    return int(response.headers["X-Total-Count"])


async def stored_payload(client: TestClient, instance_id: str) -> dict:
    response = await client.get(
        f"/api/v1/triggerinstances/{instance_id}", headers={"St2-Api-Key": client.first_key}
    )
    return (await response.json())["payload"]


def github_signature(body: bytes, secret: str = GITHUB_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- first start, read API ----------------------------------------------------------------


async def test_first_start_prints_one_admin_key_and_the_api_needs_a_key(client, capsys):
    assert client.first_key.startswith("hy_")
    for path in ("/api/v1/triggerinstances", "/api/v1/rules", "/api/v1/webhooks"):
        response = await client.get(path)
        assert response.status == 401, path
        assert "St2-Api-Key" in (await response.json())["faultstring"]
        # RFC 9110: a 401 carries a challenge.
        assert response.headers["WWW-Authenticate"] == 'ApiKey realm="hookyard"'
    assert (await client.get("/api/v1/rules?st2-api-key=" + client.first_key)).status == 200
    bearer = {"Authorization": f"Bearer {client.first_key}"}
    assert (await client.get("/api/v1/rules", headers=bearer)).status == 200
    assert (await client.get("/health")).status == 200
    assert (await client.get("/ready")).status == 200
    wrong = client.first_key[:-1] + ("A" if client.first_key[-1] != "A" else "B")
    response = await client.get("/api/v1/rules", headers={"St2-Api-Key": wrong})
    assert response.status == 401 and wrong not in await response.text()


async def test_a_restart_on_the_same_store_creates_no_second_key(settings, capsys):
    async with TestClient(TestServer(create_app(settings))):
        assert _first_key(capsys.readouterr().out)
    async with TestClient(TestServer(create_app(settings))) as again:
        assert "hy_" not in capsys.readouterr().out
        assert len(await again.server.app[RUNTIME].store.list_api_keys()) == 1


async def test_auth_disabled_opens_everything_and_warns(tmp_path, caplog, capsys):
    path = write_config(tmp_path, "store: {url: 'sqlite:///h.db'}\nrules_dirs: [rules]\n")
    settings = load_settings(path, environ={"HOOKYARD_AUTH__ENABLED": "false"})
    async with TestClient(TestServer(create_app(settings))) as c:
        assert "hy_" not in capsys.readouterr().out
        assert (await c.post("/webhooks/plain", json={})).status == 202
        assert (await c.get("/api/v1/triggerinstances")).status == 200
    assert any("AUTH IS DISABLED" in r.getMessage() for r in caplog.records)


# --- API keys on webhooks ------------------------------------------------------------------


async def test_plain_hook_takes_a_key_in_each_standard_place(client):
    key = await make_key(client)
    for kwargs in (
        {"headers": {"St2-Api-Key": key}},
        {"params": {"st2-api-key": key}},
        {"headers": {"Authorization": f"Bearer {key}"}},
    ):
        response = await client.post("/webhooks/plain", json={"a": 1}, **kwargs)
        assert response.status == 202, kwargs
    response = await client.post("/webhooks/plain", json={"a": 1})
    assert response.status == 401
    accepted = await (
        await client.post("/webhooks/plain", json={}, headers={"St2-Api-Key": key})
    ).json()
    payload = await stored_payload(client, accepted["id"])
    assert "st2-api-key" not in payload["headers_lower"]
    assert key not in str(payload)


async def test_scopes_expiry_and_disabled_keys_are_403_and_store_nothing(client):
    store = client.server.app[RUNTIME].store
    other_hook = await make_key(client, webhooks=["partner"])
    other_trigger = await make_key(client, triggers=["some.other"])
    expired = await make_key(client, lifetime=timedelta(seconds=1))
    disabled = await make_key(client, name="off")
    await store.set_api_key_enabled((await store.find_api_key(disabled[:11])).id, False)
    await asyncio.sleep(1.1)
    before = await total(client)
    for key, words in (
        (other_hook, "may not post to webhook 'plain'"),
        (other_trigger, "may not fire"),
        (expired, "expired"),
        (disabled, "disabled"),
    ):
        response = await client.post("/webhooks/plain", json={}, headers={"St2-Api-Key": key})
        assert response.status == 403, words
        assert "WWW-Authenticate" not in response.headers  # a 403 is not a challenge
        text = await response.text()
        assert words in text and key not in text
    assert await total(client) == before
    # In scope: a trigger scope names the rule it may fire, or the trigger type.
    by_rule = await make_key(client, triggers=["t.plain"])
    response = await client.post("/webhooks/plain", json={}, headers={"St2-Api-Key": by_rule})
    assert response.status == 202
    generic = await make_key(client, triggers=["ci.deployed"])
    response = await client.post(
        "/webhooks/st2",
        json={"trigger": "ci.deployed", "payload": {}},
        headers={"St2-Api-Key": generic},
    )
    assert response.status == 202
    response = await client.post("/webhooks/plain", json={}, headers={"St2-Api-Key": generic})
    assert response.status == 403


async def test_custom_placements_query_header_body_and_path(client):
    key = await make_key(client)
    assert (await client.post("/webhooks/partner", json={}, params={"token": key})).status == 202
    assert (await client.post("/webhooks/partner", json={}, params={"token": "x"})).status == 401
    response = await client.post("/webhooks/in-header", json={}, headers={"X-Partner-Token": key})
    assert response.status == 202
    payload = await stored_payload(client, (await response.json())["id"])
    assert "x-partner-token" not in payload["headers_lower"]

    response = await client.post("/webhooks/in-body", json={"api_token": key, "n": 1})
    assert response.status == 202
    payload = await stored_payload(client, (await response.json())["id"])
    assert payload["body"] == {"n": 1}
    assert (await client.post("/webhooks/in-body", json={"n": 1})).status == 401

    response = await client.post(f"/webhooks/team/alerts/{key}", json={"x": 1})
    assert response.status == 202
    assert (await response.json())["webhook"] == "team/alerts"
    assert (await client.post("/webhooks/team/alerts", json={})).status == 401
    assert (await client.post("/webhooks/team/alerts/hy_wrongwrongwrong", json={})).status == 401
    assert (await client.post("/webhooks/nothere/x", json={})).status == 404


# --- signatures, JWT ------------------------------------------------------------------------


async def test_github_signature_dedupe_and_stripped_headers(client):
    before = await total(client)
    body = b'{"zen": "Keep it logically awesome.", "ref": "refs/heads/main"}'
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": github_signature(body),
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    }
    first = await client.post("/webhooks/github-push", data=body, headers=headers)
    assert first.status == 202, await first.text()
    original = await first.json()
    again = await client.post("/webhooks/github-push", data=body, headers=headers)
    assert again.status == 202
    repeat = await again.json()
    assert (repeat["id"], repeat["duplicate"]) == (original["id"], True)
    assert await total(client) == before + 1
    payload = await stored_payload(client, original["id"])
    assert "x-hub-signature-256" not in payload["headers_lower"]
    assert payload["headers_lower"]["x-github-delivery"] == headers["X-GitHub-Delivery"]

    for bad, reason in (
        ({}, "missing"),
        ({"X-Hub-Signature-256": github_signature(body)[:-2]}, "malformed"),
        ({"X-Hub-Signature-256": github_signature(body).upper()}, "malformed"),
        ({"X-Hub-Signature-256": github_signature(b"{}")}, "does not match"),
    ):
        response = await client.post(
            "/webhooks/github-push",
            data=body,
            headers={"Content-Type": "application/json", **bad},
        )
        assert response.status == 401, reason
        assert response.headers["WWW-Authenticate"] == 'Signature realm="hookyard"'
        text = await response.text()
        assert reason in text and github_signature(body)[7:] not in text
    # An API key is no substitute for the signature.
    response = await client.post(
        "/webhooks/github-push", data=body, headers={"St2-Api-Key": client.first_key}
    )
    assert response.status == 401
    assert await total(client) == before + 1


async def test_jwt_hook(client):
    def token(**claims) -> str:
        claims.setdefault("exp", int(time.time()) + 60)
        claims.setdefault("aud", "hookyard")
        return jwt.encode(claims, JWT_SECRET, algorithm="HS256")

    good = {"Authorization": f"Bearer {token(sub='ci')}"}
    assert (await client.post("/webhooks/tokened", json={}, headers=good)).status == 202
    for bad in (
        token(exp=int(time.time()) - 10),
        token(aud="someone-else"),
        jwt.encode({"exp": int(time.time()) + 60, "aud": "hookyard"}, None, algorithm="none"),
        jwt.encode({"exp": 9999999999, "aud": "hookyard"}, "x" * 40, algorithm="HS256"),
    ):
        response = await client.post(
            "/webhooks/tokened", json={}, headers={"Authorization": f"Bearer {bad}"}
        )
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == (
            'Bearer realm="hookyard", error="invalid_token"'
        )
    # No token at all: RFC 6750 gives no error code.
    response = await client.post("/webhooks/tokened", json={})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="hookyard"'


# --- dedupe races, limits, custom responses --------------------------------------------------


async def test_twenty_identical_concurrent_posts_store_one_row(client):
    key = await make_key(client)
    before = await total(client)
    body = {"api_token": key, "event": "same"}
    responses = await asyncio.gather(
        *(client.post("/webhooks/in-body", json=body) for _ in range(20))
    )
    answers = [await r.json() for r in responses]
    assert {r.status for r in responses} == {202}
    assert len({a["id"] for a in answers}) == 1
    assert sum(not a["duplicate"] for a in answers) == 1
    assert await total(client) == before + 1


async def test_limits_body_per_hook_and_header_count(client):
    response = await client.post(
        "/webhooks/open", data=b"x" * 65, headers={"Content-Type": "text/plain"}
    )
    assert response.status == 413 and "64" in await response.text()
    many = {f"X-H{i}": "v" for i in range(101)}
    response = await client.post("/webhooks/open", json={}, headers=many)
    assert response.status == 431 and "max_headers" in await response.text()
    deep = "[" * 100 + "]" * 100
    response = await client.post(
        "/webhooks/plain",
        data=deep,
        headers={"Content-Type": "application/json", "St2-Api-Key": client.first_key},
    )
    assert response.status == 400 and "nests deeper" in await response.text()


async def test_custom_response_is_rendered(client):
    response = await client.post("/webhooks/open", json={"a": 1})
    assert response.status == 200
    data = await response.json()
    assert data["ok"] is True and len(data["got"]) == 24


# --- the key API ------------------------------------------------------------------------------


async def test_key_api_create_list_extend_delete(client):
    admin = {"St2-Api-Key": client.first_key}
    response = await client.post(
        "/api/v1/apikeys",
        json={
            "name": "partner",
            "webhooks": ["partner"],
            "expiration": {"count": 60, "interval": "minutes"},
        },
        headers=admin,
    )
    assert response.status == 201
    created = await response.json()
    assert created["name"] == "partner" and created["key"].startswith("hy_")
    key = created["key"]
    assert (await client.post("/webhooks/partner", json={}, params={"token": key})).status == 202
    # A non-admin key cannot manage keys.
    assert (await client.get("/api/v1/apikeys", headers={"St2-Api-Key": key})).status == 403

    listed = await (await client.get("/api/v1/apikeys", headers=admin)).json()
    assert [k["name"] for k in listed][-1] == "partner"
    assert key not in str(listed) and "key_hash" not in str(listed)

    expires = created["expires_at"]
    response = await client.patch(
        f"/api/v1/apikeys/{created['id']}/extend",
        json={"count": 1, "interval": "days"},
        headers=admin,
    )
    assert response.status == 200 and (await response.json())["expires_at"] > expires
    bad = await client.patch(
        f"/api/v1/apikeys/{created['id']}/extend",
        json={"count": 1, "interval": "weeks"},
        headers=admin,
    )
    assert bad.status == 400

    assert (await client.delete(f"/api/v1/apikeys/{created['id']}", headers=admin)).status == 204
    assert (await client.post("/webhooks/partner", json={}, params={"token": key})).status == 401
    assert (await client.delete(f"/api/v1/apikeys/{created['id']}", headers=admin)).status == 404

    ids = []
    for name in ("a", "b"):
        made = await client.post("/api/v1/apikeys", json={"name": name}, headers=admin)
        ids.append((await made.json())["id"])
    response = await client.delete("/api/v1/apikeys", json={"ids": ids}, headers=admin)
    assert (await response.json())["deleted"] == ids


# --- definitions fail the start ------------------------------------------------------------


@pytest.mark.parametrize(
    ("snippet", "words"),
    [
        ("  h:\n    auht: none\n", "config.yaml:4:5: webhooks.h.auht: unknown webhook setting"),
        (
            "  h:\n    auth: signature\n    signature: {scheme: gitlab, secret: x}\n",
            "config.yaml:5:25: webhooks.h.signature.scheme: unknown signature scheme 'gitlab'",
        ),
        (
            "  h:\n    apikey: {in: cookie, name: x}\n",
            "config.yaml:4:18: webhooks.h.apikey.in: 'cookie'",
        ),
        (
            "  h:\n    auth: signature\n    signature: {scheme: github, secret: '${NOPE_X}'}\n",
            "environment variable NOPE_X is not set",
        ),
    ],
)
def test_bad_definitions_fail_at_start_with_file_and_line(tmp_path, snippet, words):
    path = write_config(tmp_path, "store: {url: 'sqlite:///h.db'}\nwebhooks:\n" + snippet)
    with pytest.raises(ConfigError) as error:
        create_app(load_settings(path, environ={}))
    assert words in str(error.value)


def test_a_defined_secret_is_scrubbed_from_logs(settings):
    import logging

    from engine.support.logs import scrubber

    create_app(settings)
    record = logging.LogRecord("x", logging.INFO, "f", 1, "secret is %s", (GITHUB_SECRET,), None)
    scrubber.filter(record)
    assert GITHUB_SECRET not in record.getMessage()


# --- what a key may do on the API ------------------------------------------------------------


async def test_a_webhook_scoped_key_may_post_its_hook_and_nothing_else(client):
    key = await make_key(client, webhooks=("plain",))
    headers = {"St2-Api-Key": key}
    assert (await client.post("/webhooks/plain", json={}, headers=headers)).status == 202
    refused = [
        await client.post(
            "/api/v1/executions",
            headers=headers,
            json={"action": "core.local", "parameters": {"cmd": "id"}},
        ),
        await client.get("/api/v1/triggerinstances", headers=headers),
        await client.put("/api/v1/keys/x", headers=headers, json={"name": "x", "value": "1"}),
        await client.get("/api/v1/executions", headers=headers),
    ]
    for response in refused:
        assert response.status == 403, response.url
        assert "limited to posting webhooks" in (await response.json())["faultstring"]
    executions = await client.get("/api/v1/executions", headers={"St2-Api-Key": client.first_key})
    assert executions.headers["X-Total-Count"] == "0"


async def test_an_operator_key_runs_actions_as_itself_and_cannot_write_the_datastore(client):
    from engine.packs import load_packs

    runtime = client.server.app[RUNTIME]
    runtime.packs, _ = load_packs([], runners=runtime.runners)
    key = await make_key(client, name="ci-bot", role=OPERATOR, grants=Grants(packs=("core",)))
    headers = {"St2-Api-Key": key}
    response = await client.post(
        "/api/v1/executions",
        headers=headers,
        json={"action": "core.noop", "user": "admin", "context": {"rule": {"ref": "t.plain"}}},
    )
    assert response.status == 201
    created = await response.json()
    assert created["context"] == {"user": "ci-bot"}
    write = await client.put("/api/v1/keys/x", headers=headers, json={"name": "x", "value": "1"})
    assert write.status == 403 and "admin" in (await write.json())["faultstring"]
    admin = {"St2-Api-Key": client.first_key}
    assert (
        await client.put("/api/v1/keys/x", headers=admin, json={"name": "x", "value": "1"})
    ).status == 200
    as_admin = await client.post(
        "/api/v1/executions", headers=admin, json={"action": "core.noop", "user": "alice"}
    )
    assert (await as_admin.json())["context"]["user"] == "alice"


async def test_an_observer_key_only_reads_and_cannot_post_webhooks(client):
    observer = await make_key(client, name="watcher", role="observer")
    operator = await make_key(client, name="ops", role=OPERATOR)
    refused = await client.post("/webhooks/plain", json={}, headers={"St2-Api-Key": observer})
    assert refused.status == 403
    assert (await refused.json())["faultstring"] == (
        "key 'watcher' (role observer) may not post to webhook 'plain': the observer role "
        "only reads the API; posting needs a webhook, operator or admin key"
    )
    accepted = await client.post("/webhooks/plain", json={}, headers={"St2-Api-Key": operator})
    assert accepted.status == 202
    assert await total(client) == 1
