"""A rule that posts a signed webhook (core.sendwebhook) on a matching inbound event, end to
end: webhook in, rule, actions worker, sendwebhook runner, a real receiver verifying the
signature with the independent `standardwebhooks` library."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from standardwebhooks.webhooks import Webhook

from engine.http.app import create_app
from engine.outbound.signing import generate_secret
from tests.integration.test_outbound_webhooks import settings_for

SECRET = generate_secret()
RULE = f"""\
name: notify_on_deploy
pack: examples
trigger:
  type: core.st2.webhook
  parameters: {{url: deploys}}
criteria:
  trigger.body.env: {{type: equals, pattern: prod}}
action:
  ref: core.sendwebhook
  parameters:
    url: "{{{{ trigger.body.callback }}}}"
    body:
      service: "{{{{ trigger.body.service }}}}"
      env: "{{{{ trigger.body.env }}}}"
    signing:
      scheme: standard-webhooks
      secret: "{SECRET}"
"""


async def wait_execution(client: TestClient, instance_id: str) -> dict:
    # Generous bound for a loaded machine; not a timing assertion.
    for _ in range(400):
        found = await (
            await client.get("/api/v1/executions", params={"trigger_instance": instance_id})
        ).json()
        if found and found[0]["status"] in ("succeeded", "failed", "timeout"):
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no finished execution for {instance_id}")


async def test_a_rule_posts_a_signed_webhook_the_receiver_verifies(tmp_path: Path) -> None:
    verified: list[dict] = []

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        # Raises (a 500, so the execution fails) unless the signature is right.
        verified.append(Webhook(SECRET).verify(body, dict(request.headers)))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/deploys", receive)
    receiver = TestServer(app, host="127.0.0.1")
    settings = settings_for(tmp_path)
    (tmp_path / "rules" / "notify.yaml").write_text(RULE)
    async with receiver, TestClient(TestServer(create_app(settings))) as client:
        callback = f"http://127.0.0.1:{receiver.port}/deploys"
        accepted = await client.post(
            "/webhooks/deploys", json={"env": "prod", "service": "api", "callback": callback}
        )
        execution = await wait_execution(client, (await accepted.json())["id"])

    assert execution["status"] == "succeeded", execution["result"]
    assert execution["result"]["status_code"] == 200
    assert verified == [{"service": "api", "env": "prod"}]
    # The signing secret never shows in what the API returns.
    assert SECRET not in str(execution)


async def test_an_unknown_signing_scheme_fails_the_execution_before_sending(tmp_path: Path):
    settings = settings_for(tmp_path)
    (tmp_path / "rules" / "notify.yaml").write_text(
        RULE.replace("scheme: standard-webhooks", "scheme: md5")
    )
    async with TestClient(TestServer(create_app(settings))) as client:
        accepted = await client.post(
            "/webhooks/deploys",
            json={"env": "prod", "service": "api", "callback": "http://127.0.0.1:9/x"},
        )
        execution = await wait_execution(client, (await accepted.json())["id"])
    assert execution["status"] == "failed"
    assert "unknown outbound signature scheme" in execution["result"]["error"]
