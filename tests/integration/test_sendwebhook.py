"""A rule that posts a signed webhook (core.sendwebhook) on a matching inbound event, end to
end: webhook in, rule, actions worker, sendwebhook runner, a real receiver verifying the
signature with the independent `standardwebhooks` library."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from standardwebhooks.webhooks import Webhook

from engine.config import Settings
from engine.outbound.signing import generate_secret
from tests.support.app import app_client, quick_outbound, settings_for
from tests.support.waiting import wait_execution

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


def send_settings(tmp_path: Path) -> Settings:
    return settings_for(
        tmp_path,
        rules={},
        roles=("api", "rules", "actions", "deliveries"),
        outbound=quick_outbound(tmp_path),
    )


async def wait_sent(client: TestClient, instance_id: str) -> dict:
    return await wait_execution(
        client, trigger_instance=instance_id, statuses=("succeeded", "failed", "timeout")
    )


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
    settings = send_settings(tmp_path)
    (tmp_path / "rules" / "notify.yaml").write_text(RULE)
    async with receiver, app_client(settings) as client:
        callback = f"http://127.0.0.1:{receiver.port}/deploys"
        accepted = await client.post(
            "/webhooks/deploys", json={"env": "prod", "service": "api", "callback": callback}
        )
        execution = await wait_sent(client, (await accepted.json())["id"])

    assert execution["status"] == "succeeded", execution["result"]
    assert execution["result"]["status_code"] == 200
    assert verified == [{"service": "api", "env": "prod"}]
    # The signing secret never shows in what the API returns.
    assert SECRET not in str(execution)


async def test_an_unknown_signing_scheme_fails_the_execution_before_sending(tmp_path: Path):
    settings = send_settings(tmp_path)
    (tmp_path / "rules" / "notify.yaml").write_text(
        RULE.replace("scheme: standard-webhooks", "scheme: md5")
    )
    async with app_client(settings) as client:
        accepted = await client.post(
            "/webhooks/deploys",
            json={"env": "prod", "service": "api", "callback": "http://127.0.0.1:9/x"},
        )
        execution = await wait_sent(client, (await accepted.json())["id"])
    assert execution["status"] == "failed"
    assert "unknown outbound signature scheme" in execution["result"]["error"]
