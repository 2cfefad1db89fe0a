"""Webhook ingest and the read API through the real app (aiohttp test client, SQLite file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from engine.config import IngestSettings, Settings
from engine.http.app import create_app
from tests.support.app import settings_for
from tests.support.packs import noop_rule
from tests.support.waiting import wait_processed

RULE = """\
name: on_push
pack: t
trigger: {type: core.st2.webhook, parameters: {url: github/push}}
criteria:
  trigger.body.ref: {type: equals, pattern: refs/heads/main}
action:
  ref: core.local
  parameters:
    cmd: "echo {{ trigger.body.ref }}"
    commits: "{{ trigger.body.commits }}"
"""
ANY_RULE = noop_rule("anything")
CUSTOM_TRIGGER_RULE = """\
name: deployed
pack: t
trigger: {type: ci.deployed}
criteria:
  trigger.status: {type: equals, pattern: failed}
action: {ref: core.echo, parameters: {message: "{{ trigger.service }}"}}
"""
# The bound this module always waited for the rules worker: ingest is quick.
INGEST_WAIT = 5.0


def ingest_settings(tmp_path: Path, **ingest) -> Settings:
    return settings_for(
        tmp_path,
        rules={"push": RULE, "any": ANY_RULE, "custom": CUSTOM_TRIGGER_RULE},
        roles=("api", "rules"),
        ingest=IngestSettings(**ingest),  # auth off: these tests are about ingest
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return ingest_settings(tmp_path)


async def test_named_hook_to_enforcement_and_requested_execution(client):
    response = await client.post(
        "/webhooks/github/push",
        json={"ref": "refs/heads/main", "commits": [{"id": 1}, {"id": 2}]},
        headers={
            "X-GitHub-Event": "push",
            "St2-Api-Key": "secret-key",
            "Authorization": "Bearer x",
        },
    )
    assert response.status == 202
    accepted = await response.json()
    assert accepted["webhook"] == "github/push" and accepted["duplicate"] is False
    instance = await wait_processed(client, accepted["id"], timeout=INGEST_WAIT)
    assert instance["status"] == "processed"
    assert instance["trigger"] == "core.st2.webhook"
    payload = instance["payload"]
    assert payload["body"]["ref"] == "refs/heads/main"
    assert payload["headers"]["X-GitHub-Event"] == "push"
    assert payload["headers_lower"]["x-github-event"] == "push"
    assert "st2-api-key" not in payload["headers_lower"]
    assert "authorization" not in payload["headers_lower"]

    enforcements = await client.get(
        "/api/v1/ruleenforcements", params={"trigger_instance": accepted["id"]}
    )
    assert enforcements.headers["X-Total-Count"] == "1"
    (enforcement,) = await enforcements.json()
    assert enforcement["rule"]["ref"] == "t.on_push"
    assert enforcement["status"] == "succeeded"
    assert [c["passed"] for c in enforcement["trace"]] == [True]

    execution = await (await client.get(f"/api/v1/executions/{enforcement['execution_id']}")).json()
    # No actions role in this app: the execution waits, requested.
    assert execution["status"] == "requested"
    assert execution["action"]["ref"] == "core.local"
    assert execution["parameters"] == {
        "cmd": "echo refs/heads/main",
        "commits": [{"id": 1}, {"id": 2}],
    }
    assert execution["context"]["trigger_instance"]["id"] == accepted["id"]
    assert execution["context"]["rule"]["ref"] == "t.on_push"


async def test_api_prefix_and_non_matching_payload(client):
    response = await client.post("/api/v1/webhooks/github/push/", json={"ref": "refs/heads/dev"})
    assert response.status == 202
    instance = await wait_processed(client, (await response.json())["id"], timeout=INGEST_WAIT)
    assert instance["status"] == "processed"
    enforcements = await client.get(
        "/api/v1/ruleenforcements/", params={"trigger_instance": instance["id"]}
    )
    assert enforcements.headers["X-Total-Count"] == "0"


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b'[1, "two"]', "application/json", [1, "two"]),
        (b"42", "application/json", 42),
        (b"", "application/json", {}),
        (b"", None, {}),
        (
            b"a=1&b=x&a=2&c=",
            "application/x-www-form-urlencoded",
            {"a": ["1", "2"], "b": "x", "c": ""},
        ),
        ("héllo".encode(), "text/plain; charset=utf-8", "héllo"),
        (b'{"x": 1}', "application/vnd.github+json", {"x": 1}),
        (b'{"x": 1}', None, {"x": 1}),
    ],
)
async def test_body_forms(client, body, content_type, expected):
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post(
        "/webhooks/anything", data=body, headers=headers, skip_auto_headers=["Content-Type"]
    )
    assert response.status == 202, await response.text()
    instance = await (
        await client.get(f"/api/v1/triggerinstances/{(await response.json())['id']}")
    ).json()
    assert instance["payload"]["body"] == expected


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status", "message"),
    [
        ("/webhooks/nope", b"{}", "application/json", 404, "no webhook named 'nope'"),
        ("/webhooks/anything", b"{bad", "application/json", 400, "malformed JSON body"),
        ("/webhooks/anything", b"<x/>", "application/xml", 415, "unsupported Content-Type"),
        ("/webhooks/anything", b"\xff\xfe", "text/plain", 400, "not valid UTF-8"),
        ("/webhooks/anything", b"[" * 100 + b"]" * 100, "application/json", 400, "nests deeper"),
        ("/webhooks/st2", b"[1]", "application/json", 400, "needs a JSON object body"),
        ("/webhooks/st2", b'{"payload": {}}', "application/json", 400, 'needs "trigger"'),
        (
            "/webhooks/st2",
            b'{"trigger": "x.y"}',
            "application/json",
            400,
            "unknown trigger type 'x.y'",
        ),
        (
            "/webhooks/st2",
            b'{"trigger": "ci.deployed", "payload": [1]}',
            "application/json",
            400,
            '"payload" must be a JSON object',
        ),
    ],
)
async def test_bad_requests_get_json_errors_and_store_nothing(
    client, path, body, content_type, status, message
):
    response = await client.post(path, data=body, headers={"Content-Type": content_type})
    assert response.status == status
    error = await response.json()
    assert message in error["faultstring"]
    listing = await client.get("/api/v1/triggerinstances")
    assert listing.headers["X-Total-Count"] == "0"


async def test_body_over_the_limit_is_413(tmp_path):
    app = create_app(ingest_settings(tmp_path, max_body=100))
    async with TestClient(TestServer(app)) as c:
        response = await c.post("/webhooks/anything", json={"x": "y" * 200})
        assert response.status == 413
        assert "over the limit of 100 bytes" in (await response.json())["faultstring"]

        async def chunks():
            for _ in range(10):
                yield b"y" * 50

        streamed = await c.post(
            "/webhooks/anything", data=chunks(), headers={"Content-Type": "text/plain"}
        )
        assert streamed.status == 413
        ok = await c.post("/webhooks/anything", json={"x": 1})
        assert ok.status == 202


async def test_backlog_over_bound_is_503_with_retry_after(tmp_path):
    settings = ingest_settings(tmp_path, max_backlog=0, retry_after=7)
    async with TestClient(TestServer(create_app(settings))) as c:
        response = await c.post("/webhooks/anything", json={})
        assert response.status == 503
        assert response.headers["Retry-After"] == "7"
        assert "waiting to be processed" in (await response.json())["faultstring"]
        assert (await c.get("/api/v1/triggerinstances")).headers["X-Total-Count"] == "0"


async def test_generic_st2_webhook_fires_custom_trigger_rules(client):
    response = await client.post(
        "/webhooks/st2",
        json={"trigger": "ci.deployed", "payload": {"status": "failed", "service": "api"}},
    )
    assert response.status == 202
    accepted = await response.json()
    assert accepted["trigger"] == "ci.deployed" and accepted["webhook"] is None
    await wait_processed(client, accepted["id"], timeout=INGEST_WAIT)
    (enforcement,) = await (
        await client.get("/api/v1/ruleenforcements", params={"rule_ref": "t.deployed"})
    ).json()
    execution = await (await client.get(f"/api/v1/executions/{enforcement['execution_id']}")).json()
    assert execution["parameters"] == {"message": "api"}


async def test_listing_paging_filters_and_total(client):
    ids = []
    for n in range(5):
        response = await client.post("/webhooks/anything", json={"n": n})
        ids.append((await response.json())["id"])
    page = await client.get("/api/v1/triggerinstances", params={"limit": "2", "offset": "1"})
    assert page.headers["X-Total-Count"] == "5"
    items = await page.json()
    assert [i["payload"]["body"]["n"] for i in items] == [3, 2]  # newest first
    everything = await (await client.get("/api/v1/triggerinstances/?limit=-1")).json()
    assert len(everything) == 5
    filtered = await client.get("/api/v1/triggerinstances", params={"webhook": "github/push"})
    assert filtered.headers["X-Total-Count"] == "0"
    bad = await client.get("/api/v1/triggerinstances", params={"limit": "x"})
    assert bad.status == 400 and "limit" in (await bad.json())["faultstring"]
    missing = await client.get("/api/v1/triggerinstances/000000000000000000000000")
    assert missing.status == 404 and "faultstring" in await missing.json()


async def test_webhook_and_rule_listing_in_st2_shapes(client):
    hooks = await (await client.get("/api/v1/webhooks")).json()
    assert {h["parameters"]["url"] for h in hooks} == {"anything", "github/push"}
    rules = await client.get("/api/v1/rules/")
    assert rules.headers["X-Total-Count"] == "3"
    rule = await (await client.get("/api/v1/rules/t.on_push")).json()
    assert rule["trigger"]["parameters"]["url"] == "github/push"
    assert rule["criteria"]["trigger.body.ref"] == {"type": "equals", "pattern": "refs/heads/main"}
    assert (await client.get("/api/v1/rules/t.nope")).status == 404


async def test_health_ready_and_unknown_routes(client):
    assert (await (await client.get("/health")).json()) == {"status": "alive"}
    ready = await client.get("/ready")
    assert ready.status == 200 and (await ready.json())["ready"] is True
    unknown = await client.get("/nothing/here")
    assert unknown.status == 404
    assert "faultstring" in json.loads(await unknown.text())
    wrong_method = await client.get("/webhooks/anything")
    assert wrong_method.status == 405


async def test_unstorable_values_are_400_not_503(client):
    response = await client.post(
        "/webhooks/anything",
        data=b'{"x": NaN, "y": "a\\u0000b"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 400
    assert "cannot be stored" in (await response.json())["faultstring"]
    assert (await client.get("/api/v1/triggerinstances")).headers["X-Total-Count"] == "0"
