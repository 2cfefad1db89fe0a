"""Named hooks: the payload shows the request's method, path and query beside headers and
body; a hook's definition may accept more methods than POST and answer a sender's
endpoint challenge. A real app on a real SQLite file, with and without the ingest writer
process; rules evaluated on what was stored."""

from __future__ import annotations

import hashlib
import hmac
import textwrap
from pathlib import Path
from urllib.parse import quote

import pytest
import yarl
from aiohttp.test_utils import TestClient

from engine.config import Settings, load_settings
from engine.http.context import RUNTIME
from engine.model.apikeys import new_api_key
from engine.model.roles import WEBHOOK
from engine.rules import load_rule

SECRET = "meta-app-secret"
VERIFY = "verify-me-123"

CONFIG = """\
store: {{url: "sqlite:///hookyard.db"}}
rules_dirs: [rules]
packs_dirs: []
roles: [api]
ingest: {{writer_process: {writer}}}
webhooks:
  partner:
    apikey: {{in: query, name: token}}
  team/alerts:
    apikey: {{in: path}}
  meta:
    methods: [GET, POST]
    auth: signature
    signature: {{scheme: github, secret: "{secret}"}}
    challenge:
      query: hub.challenge
      verify_token: {{query: hub.verify_token, value: "{verify}"}}
  graph:
    methods: [post]
    challenge: {{query: validationToken}}
  anything-goes:
    methods: [GET, PUT, DELETE]
"""
RULE = """\
name: plain
pack: t
trigger: {type: core.st2.webhook, parameters: {url: plain}}
action: {ref: core.noop}
"""
# A rule on what adnanh/webhook and APILinker users match on: method, path and query.
QUERY_RULE = """\
name: on query
pack: t
trigger: {type: core.st2.webhook, parameters: {url: plain}}
criteria:
  trigger.method: {type: equals, pattern: POST}
  trigger.path: {type: equals, pattern: /webhooks/plain}
  trigger.query.env: {type: equals, pattern: prod}
  trigger.query.tag: {type: contains, pattern: blue}
  trigger.body.name: {type: equals, pattern: st2}
  trigger.headers['X-Event']: {type: equals, pattern: deploy}
action: {ref: core.noop}
"""


@pytest.fixture(params=[True, False], ids=["writer-process", "in-process"])
def settings(request, tmp_path: Path) -> Settings:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "plain.yaml").write_text(RULE)
    config = tmp_path / "config.yaml"
    text = CONFIG.format(writer=str(request.param).lower(), secret=SECRET, verify=VERIFY)
    config.write_text(textwrap.dedent(text))
    return load_settings(config, environ={})


@pytest.fixture
def after_start(capsys):
    async def add_key(client: TestClient) -> None:
        capsys.readouterr()
        store = client.server.app[RUNTIME].store
        admin, client.admin_key = new_api_key("admin", admin=True)
        await store.create_api_key(admin)
        poster, client.key = new_api_key("poster", role=WEBHOOK)
        await store.create_api_key(poster)

    return add_key


async def stored(client: TestClient, instance_id: str) -> dict:
    response = await client.get(
        f"/api/v1/triggerinstances/{instance_id}", headers={"St2-Api-Key": client.admin_key}
    )
    assert response.status == 200
    return (await response.json())["payload"]


def url(path: str) -> yarl.URL:
    return yarl.URL(path, encoded=True)


def signed(body: bytes) -> dict[str, str]:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}"}


# --- method, path, query in the payload --------------------------------------------------


async def test_payload_carries_method_path_and_query_without_credentials(client) -> None:
    response = await client.post(
        url(f"/webhooks/plain?env=prod&tag=blue&tag=green&empty=&st2-api-key={client.key}"),
        json={"name": "st2"},
        headers={"X-Event": "deploy"},
    )
    assert response.status == 202, await response.text()
    payload = await stored(client, (await response.json())["id"])
    assert payload["method"] == "POST"
    assert payload["path"] == "/webhooks/plain"
    assert payload["query"] == {"env": "prod", "tag": ["blue", "green"], "empty": ""}
    # What StackStorm rules see is unchanged.
    assert payload["body"] == {"name": "st2"}
    assert payload["headers"]["X-Event"] == "deploy"
    assert payload["headers_lower"]["x-event"] == "deploy"
    assert client.key not in str(payload)
    assert load_rule(QUERY_RULE).evaluate(payload).matched
    assert (
        not load_rule(QUERY_RULE.replace("pattern: prod", "pattern: dev")).evaluate(payload).matched
    )


async def test_keys_in_the_query_or_the_path_are_not_stored(client) -> None:
    by_query = await client.post(url(f"/webhooks/partner?token={client.key}&x=1"), json={})
    assert by_query.status == 202, await by_query.text()
    payload = await stored(client, (await by_query.json())["id"])
    assert payload["query"] == {"x": "1"} and payload["path"] == "/webhooks/partner"
    by_path = await client.post(url(f"/api/v1/webhooks/team/alerts/{client.key}"), json={})
    assert by_path.status == 202, await by_path.text()
    payload = await stored(client, (await by_path.json())["id"])
    assert payload["path"] == "/api/v1/webhooks/team/alerts"
    assert client.key not in str(payload)


async def test_hostile_query_strings(client) -> None:
    headers = {"St2-Api-Key": client.key}
    latin = await client.post(
        url("/webhooks/plain?caf%E9=%FF&ok=%E2%9C%93"), json={}, headers=headers
    )
    assert latin.status == 202
    payload = await stored(client, (await latin.json())["id"])
    assert payload["query"] == {"café": "ÿ", "ok": "✓"}  # not UTF-8: read as ISO-8859-1
    nul = await client.post(url("/webhooks/plain?a=%00"), json={}, headers=headers)
    assert nul.status == 400 and "NUL" in (await nul.json())["faultstring"]
    many = "&".join(f"k{n}={n}" for n in range(300))
    big = await client.post(url(f"/webhooks/plain?{many}&k1=again"), json={}, headers=headers)
    assert big.status == 202
    payload = await stored(client, (await big.json())["id"])
    assert len(payload["query"]) == 300 and payload["query"]["k1"] == ["1", "again"]
    assert (await client.get("/health")).status == 200


# --- methods and challenges --------------------------------------------------------------


async def test_other_methods_get_405_with_allow(client) -> None:
    for method, path, allow in [
        ("GET", "/webhooks/plain", "POST"),  # a hook from a rule: POST only
        ("PUT", "/webhooks/no-such-hook", "POST"),
        ("DELETE", "/webhooks/meta", "GET,POST"),
        ("PATCH", "/webhooks/graph", "POST"),
        ("POST", "/webhooks/anything-goes", "GET,PUT,DELETE"),
    ]:
        response = await client.request(method, path, headers={"St2-Api-Key": client.key})
        assert response.status == 405, (method, path)
        assert response.headers["Allow"] == allow
        assert "Method Not Allowed" in (await response.json())["faultstring"]


async def test_a_listed_method_is_stored_with_its_method(client) -> None:
    headers = {"St2-Api-Key": client.key}
    got = await client.get(url("/webhooks/anything-goes?id=7"), headers=headers)
    assert got.status == 202, await got.text()
    payload = await stored(client, (await got.json())["id"])
    assert (payload["method"], payload["query"], payload["body"]) == ("GET", {"id": "7"}, {})
    put = await client.put("/webhooks/anything-goes", json={"a": 1}, headers=headers)
    assert put.status == 202
    assert (await stored(client, (await put.json())["id"]))["method"] == "PUT"
    # The credential still applies to every method.
    assert (await client.get("/webhooks/anything-goes")).status == 401


async def count(client: TestClient) -> int:
    response = await client.get(
        "/api/v1/triggerinstances", headers={"St2-Api-Key": client.admin_key}
    )
    return int(response.headers["X-Total-Count"])


async def test_meta_style_get_challenge_is_echoed_with_the_verify_token(client) -> None:
    before = await count(client)
    query = f"hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={VERIFY}"
    answer = await client.get(url(f"/webhooks/meta?{query}"))
    assert answer.status == 200 and await answer.text() == "1158201444"
    assert answer.content_type == "text/plain"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    wrong = await client.get(url("/webhooks/meta?hub.challenge=1&hub.verify_token=guess"))
    assert wrong.status == 403 and "verify_token" in (await wrong.json())["faultstring"]
    missing = await client.get(url("/webhooks/meta?hub.challenge=1"))
    assert missing.status == 403
    assert await count(client) == before  # a challenge stores nothing


async def test_meta_events_still_need_their_signature(client) -> None:
    body = b'{"object": "page"}'
    unsigned = await client.post(
        "/webhooks/meta", data=body, headers={"Content-Type": "application/json"}
    )
    assert unsigned.status == 401
    ok = await client.post(
        "/webhooks/meta", data=body, headers={"Content-Type": "application/json", **signed(body)}
    )
    assert ok.status == 202, await ok.text()
    # A GET without the challenge is an event like any other: signed (over no body) or refused.
    assert (await client.get(url("/webhooks/meta?x=1"))).status == 401
    signed_get = await client.get(url("/webhooks/meta?x=1"), headers=signed(b""))
    assert signed_get.status == 202
    assert (await stored(client, (await signed_get.json())["id"]))["query"] == {"x": "1"}


async def test_graph_style_post_validation_and_hostile_tokens(client) -> None:
    token = "Validation: Testing client application reachability for subscription Request-Id: 1"
    answer = await client.post(url(f"/webhooks/graph?validationToken={quote(token)}"))
    assert answer.status == 200 and await answer.text() == token
    for bad in ("", "a%0Ab", "x" * 5000, "%00"):
        refused = await client.post(url(f"/webhooks/graph?validationToken={bad}"))
        assert refused.status == 400, bad
        assert "validationToken" in (await refused.json())["faultstring"]
    script = await client.post(url("/webhooks/graph?validationToken=%3Cscript%3E"))
    assert await script.text() == "<script>" and script.content_type == "text/plain"
