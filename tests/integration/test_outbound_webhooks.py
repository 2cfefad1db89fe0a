"""Outbound webhooks end to end: the real app and deliveries worker, a real SQLite file and
a real local receiver that verifies signatures with independent libraries
(`standardwebhooks` for Standard Webhooks, PyJWT's PyJWK + `cryptography` for RSA)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from standardwebhooks.webhooks import Webhook

from engine.http.context import RUNTIME
from engine.outbound.subscriptions import Secret, Subscription
from tests.support.app import app_client
from tests.support.outbound import (
    Receiver,
    answer,
    finished,
    hang,
    outbound_settings,
    subscribe,
    wait_deliveries,
)


async def test_standard_webhooks_delivery_succeeds_on_the_third_attempt(tmp_path: Path) -> None:
    secret_box: dict[str, str] = {}

    async def verify_and_accept(request: web.Request, body: bytes) -> web.Response:
        # Raises WebhookVerificationError (a 500 here, so the test fails) if the signature
        # is wrong; the library also checks the timestamp is recent.
        payload = Webhook(secret_box["secret"]).verify(body, dict(request.headers))
        receiver.verified.append(payload)
        return web.Response(status=204)

    receiver = Receiver([answer(500), hang(2.0), verify_and_accept])
    async with receiver, app_client(outbound_settings(tmp_path)) as client:
        created = await subscribe(
            client, url=receiver.url(), events=["trigger_instance.created"], description="t"
        )
        assert created["secret"].startswith("whsec_")
        secret_box["secret"] = created["secret"]
        listed = await (await client.get("/api/v1/events/webhooks")).json()
        assert [s["id"] for s in listed] == [created["id"]] and "secret" not in listed[0]

        accepted = await (await client.post("/webhooks/in", json={"big": 2**70})).json()
        [delivery] = await wait_deliveries(client, created["id"], finished)

    assert delivery["status"] == "succeeded"
    assert delivery["attempts"] == 3
    log = delivery["attemptLog"]
    assert [a["status_code"] for a in log] == [500, None, 204]
    assert "no response within" in log[1]["error"]
    assert log[0]["response_excerpt"] == "answer 500"
    assert len(receiver.requests) == 3
    # The same message id on every attempt, so a receiver can drop repeats.
    assert len({headers["webhook-id"] for headers, _ in receiver.requests}) == 1
    [event] = receiver.verified
    assert event["type"] == "trigger_instance.created" and event["sequence"] == 1
    assert event["data"]["id"] == accepted["id"]
    # Integers beyond 2**53 arrive exact (the body holds the stored JSON text verbatim).
    assert b'"big":1180591620717411303424' in receiver.requests[-1][1]


async def test_rsa_signature_verifies_with_the_published_jwks(tmp_path: Path) -> None:
    receiver = Receiver([answer(200)])
    async with receiver, app_client(outbound_settings(tmp_path)) as client:
        created = await subscribe(
            client,
            url=receiver.url(),
            events=["trigger_instance.created"],
            signing={"scheme": "rsa-sha256"},
        )
        await client.post("/webhooks/in", json={"n": 1})
        await wait_deliveries(client, created["id"], finished)
        jwks = await (await client.get("/.well-known/jwks.json")).json()

    [(headers, body)] = receiver.requests
    kid = headers["X-Hookyard-Signature-Rsa-Sha256-Key-Id"]
    [published] = [key for key in jwks["keys"] if key["kid"] == kid]
    public_key = jwt.PyJWK(published).key
    signature = base64.b64decode(headers["X-Hookyard-Signature-Rsa-Sha256"])
    # Raises InvalidSignature if the body was not signed by the published key.
    public_key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
    assert json.loads(body)["type"] == "trigger_instance.created"


async def test_receiver_down_for_the_whole_schedule_fails_exhausts_and_disables(
    tmp_path: Path,
) -> None:
    watcher = Receiver([answer(200)])
    settings = outbound_settings(tmp_path, auto_disable_after=0.1)
    async with watcher, app_client(settings) as client:
        async with Receiver([answer(200)]) as gone:
            down_url = gone.url()  # its port is closed once this block ends
        failing = await subscribe(client, url=down_url, events=["trigger_instance.created"])
        watching = await subscribe(client, url=watcher.url(), events=["delivery.exhausted"])
        await client.post("/webhooks/in", json={})
        [failed] = await wait_deliveries(client, failing["id"], finished)
        await wait_deliveries(client, watching["id"], finished)
        after = await (await client.get(f"/api/v1/events/webhooks/{failing['id']}")).json()
        failed_list = await (
            await client.get("/api/v1/deliveries", params={"status": "failed"})
        ).json()

    assert failed["status"] == "failed" and failed["attempts"] == 3
    assert all("cannot connect" in a["error"] for a in failed["attemptLog"])
    assert [d["id"] for d in failed_list] == [failed["id"]]
    [(_, body)] = watcher.requests
    notice = json.loads(body)
    assert notice["type"] == "delivery.exhausted"
    assert notice["data"]["delivery_id"] == failed["id"] and notice["data"]["attempts"] == 3
    assert after["enabled"] is False and "every delivery failed" in after["disabledReason"]


async def test_events_of_a_rule_run_reach_a_subscription_in_sequence(tmp_path: Path) -> None:
    receiver = Receiver([answer(200)])
    settings = outbound_settings(tmp_path)
    async with receiver, app_client(settings) as client:
        created = await subscribe(client, url=receiver.url())
        await client.post("/webhooks/in", json={})

        def all_there(items: list[dict]) -> bool:
            types = [d["eventType"] for d in items]
            return finished(items) and types.count("execution.updated") >= 3

        items = await wait_deliveries(client, created["id"], all_there)

    bodies = [json.loads(body) for _, body in receiver.requests]
    by_sequence = sorted(bodies, key=lambda b: b["sequence"])
    assert [b["sequence"] for b in by_sequence] == list(range(1, len(bodies) + 1))
    types = [b["type"] for b in by_sequence]
    assert types[:4] == [
        "trigger_instance.created",
        "execution.created",
        "rule.enforced",
        "trigger_instance.processed",
    ]
    statuses = [b["data"]["status"] for b in by_sequence if b["type"] == "execution.updated"]
    assert statuses == ["scheduled", "running", "succeeded"]
    assert {d["status"] for d in items} == {"succeeded"}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost./",
        "http://a@10.0.0.1/",
        "file:///etc/passwd",
    ],
)
async def test_subscription_urls_to_private_addresses_are_refused(tmp_path: Path, url: str):
    settings = outbound_settings(tmp_path, allow_private=())
    async with app_client(settings) as client:
        response = await client.post("/api/v1/events/webhooks", json={"url": url})
        assert response.status == 400
        assert "refusing" in (await response.json())["faultstring"]
        assert await (await client.get("/api/v1/events/webhooks")).json() == []


async def test_allowlisted_loopback_is_accepted_and_a_redirect_is_not_followed(tmp_path):
    async def redirect(request: web.Request, body: bytes) -> web.Response:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    receiver = Receiver([redirect])
    settings = outbound_settings(tmp_path, retry_schedule=("0s",))
    async with receiver, app_client(settings) as client:
        created = await subscribe(client, url=receiver.url())
        await client.post("/webhooks/in", json={})
        [delivery, *_] = await wait_deliveries(client, created["id"], finished)
    assert delivery["lastStatusCode"] == 302
    assert "redirects are not followed" in delivery["lastError"]
    assert delivery["status"] == "failed"


async def test_a_destination_refused_at_delivery_time_is_the_delivery_error(tmp_path):
    settings = outbound_settings(tmp_path, allow_private=(), retry_schedule=("0s",))
    async with app_client(settings) as client:
        store = client.server.app[RUNTIME].store
        # Saved behind the API's back (as a DNS change would make it): checked again on send.
        await store.create_subscription(
            Subscription(
                id="direct",
                url="http://10.0.0.1/hook",
                custom_headers={},
                events=("trigger_instance.created",),
                secrets=(Secret("whsec_" + base64.b64encode(b"k" * 32).decode()),),
            )
        )
        await client.post("/webhooks/in", json={})
        [delivery] = await wait_deliveries(client, "direct", finished)
    assert delivery["status"] == "failed"
    assert "refusing to connect to 10.0.0.1" in delivery["lastError"]


async def test_rotate_secret_signs_with_both_and_redeliver_recover(tmp_path: Path) -> None:
    receiver = Receiver([answer(500), answer(200)])
    settings = outbound_settings(tmp_path, retry_schedule=("0s",))
    async with receiver, app_client(settings) as client:
        created = await subscribe(client, url=receiver.url(), events=["trigger_instance.created"])
        await client.post("/webhooks/in", json={})
        [failed] = await wait_deliveries(client, created["id"], finished)
        assert failed["status"] == "failed"

        rotated = await client.post(
            f"/api/v1/events/webhooks/{created['id']}/rotate-secret", json={"grace": 3600}
        )
        new_secret = (await rotated.json())["secret"]
        recover = await client.post(
            f"/api/v1/events/webhooks/{created['id']}/recover",
            json={"since": "2000-01-01T00:00:00Z"},
        )
        assert (await recover.json())["recovered"] == 1
        items = await wait_deliveries(client, created["id"], lambda i: len(i) == 2 and finished(i))
        again = await client.post(
            f"/api/v1/events/webhooks/{created['id']}/recover",
            json={"since": "2000-01-01T00:00:00Z"},
        )
        assert (await again.json())["recovered"] == 0  # already redelivered
        manual = await client.post(f"/api/v1/deliveries/{failed['id']}/redeliver")
        assert manual.status == 202

    redelivered = next(d for d in items if d["redeliveryOf"] == failed["id"])
    assert redelivered["status"] == "succeeded" and redelivered["sequence"] == 2
    headers, body = receiver.requests[1]
    # Both secrets sign during the grace period: either one verifies.
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new_secret).verify(body, headers)
    Webhook(created["secret"]).verify(body, headers)


async def test_subscription_bodies_are_checked(tmp_path: Path) -> None:
    async with app_client(outbound_settings(tmp_path)) as client:
        cases = [
            ({"url": "http://127.0.0.1/", "events": ["nope"]}, "unknown event type 'nope'"),
            ({"url": "http://127.0.0.1/", "colour": 1}, "unknown field 'colour'"),
            ({}, "'url' is required"),
            ({"url": "http://127.0.0.1/", "signing": {"scheme": "md5"}}, "unknown outbound"),
            (
                {"url": "http://127.0.0.1/", "customHeaders": {"webhook-id": "x"}},
                "set by Hookyard",
            ),
        ]
        for body, message in cases:
            response = await client.post("/api/v1/events/webhooks", json=body)
            assert response.status == 400, body
            assert message in (await response.json())["faultstring"]
        created = await subscribe(client, url="http://127.0.0.1:9/x", customHeaders={"X-T": "1"})
        patched = await client.patch(
            f"/api/v1/events/webhooks/{created['id']}", json={"enabled": False}
        )
        assert (await patched.json())["enabled"] is False
        deleted = await client.delete(f"/api/v1/events/webhooks/{created['id']}")
        assert deleted.status == 204
        missing = await client.get(f"/api/v1/events/webhooks/{created['id']}")
        assert missing.status == 404


async def test_credential_headers_are_masked_by_the_api_yet_sent_on_delivery(tmp_path: Path):
    receiver = Receiver([answer(200)])
    async with receiver:
        settings = outbound_settings(
            tmp_path,
            global_webhook_url=receiver.url("/global"),
            global_webhook_api_key="gk-bearer-1",
        )
        async with app_client(settings) as client:
            created = await subscribe(
                client,
                url=receiver.url("/own"),
                events=["trigger_instance.created"],
                customHeaders={"X-Api-Key": "ak-2", "X-Auth-Token": "at-3", "X-Team": "ops"},
            )
            masked = {"X-Api-Key": "********", "X-Auth-Token": "********", "X-Team": "ops"}
            assert created["customHeaders"] == masked
            for _ in range(200):  # the deliveries role saves the global subscription
                listing = await client.get("/api/v1/events/webhooks")
                if "global" in {s["id"] for s in await listing.json()}:
                    break
                await asyncio.sleep(0.03)
            text = await listing.text()
            assert not [s for s in ("gk-bearer-1", "ak-2", "at-3") if s in text], text
            by_id = {s["id"]: s for s in json.loads(text)}
            assert by_id["global"]["customHeaders"] == {"Authorization": "********"}
            one = await (await client.get(f"/api/v1/events/webhooks/{created['id']}")).json()
            assert one["customHeaders"] == masked
            # A client sending back what it read (masks included) keeps the stored values.
            patched = await client.patch(
                f"/api/v1/events/webhooks/{created['id']}",
                json={"customHeaders": {**one["customHeaders"], "X-Team": "sre"}},
            )
            assert (await patched.json())["customHeaders"] == {**masked, "X-Team": "sre"}

            await client.post("/webhooks/in", json={})
            await wait_deliveries(client, created["id"], finished)
            await wait_deliveries(client, "global", finished)
    own = [headers for headers, _ in receiver.requests if headers.get("X-Team") == "sre"]
    assert own and all((h["X-Api-Key"], h["X-Auth-Token"]) == ("ak-2", "at-3") for h in own)
    to_global = [h for h, _ in receiver.requests if "X-Team" not in h]
    assert to_global and all(h["Authorization"] == "Bearer gk-bearer-1" for h in to_global)
