"""Who may post, against a real `hookyard serve` on loopback.

Requests are signed by independent implementations — GitHub's published example, the
`stripe` library, the `standardwebhooks` library, pyjwt — and the abuse cases (bad,
stale, replayed or borrowed credentials) must all be refused with the right status and
leave nothing stored. Keys are made with `hookyard apikey` on the same store, no server.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import jwt
import pytest
import standardwebhooks
import stripe
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
# GitHub's documented example ("Validating webhook deliveries"): secret, payload, signature.
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_PAYLOAD = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
STRIPE_SECRET = "whsec_test_" + "s" * 24
BILLING_SECRET = "whsec_" + base64.b64encode(b"billing-secret-32-bytes-long!!!!").decode()

CONFIG = """\
webhooks:
  github-push:
    auth: signature
    signature: {scheme: github, secret: "${GH_SECRET}"}
    dedupe: {header: X-GitHub-Delivery}
  billing:
    auth: signature
    signature: {scheme: standard-webhooks, secret: "${BILLING_WHSEC}", tolerance: 300}
  payments:
    auth: signature
    signature: {scheme: stripe, secret: "${STRIPE_SECRET}"}
  tokened:
    auth: jwt
    jwt: {algorithms: [RS256], public_key: "${JWT_PUBLIC_KEY}"}
  partner:
    auth: apikey
    apikey: {in: query, name: token}
"""


def rsa_pair() -> tuple[object, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public_pem


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_signed_with(key: bytes, claims: dict) -> str:
    """A token an attacker makes: HS256 keyed with the server's RSA *public* key."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    signature = hmac.new(key, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64url(signature)}"


def apikey_cli(store: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKYARD_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "engine", "apikey", *args, "--store", store],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(ROOT / "tests"),
        timeout=60,
    )


async def test_signed_requests_pass_and_every_abuse_is_refused_storing_nothing(serve, tmp_path):
    private_key, public_pem = rsa_pair()
    config = tmp_path / "auth-config.yaml"
    config.write_text(CONFIG)
    env = {
        "HOOKYARD_AUTH__ENABLED": "true",
        "GH_SECRET": GITHUB_SECRET,
        "BILLING_WHSEC": BILLING_SECRET,
        "STRIPE_SECRET": STRIPE_SECRET,
        "JWT_PUBLIC_KEY": public_pem,
    }
    server = serve.start(env=env, args=["--config", str(config)])
    admin = server.admin_key()
    scoped = apikey_cli(serve.default_store, "create", "scoped", "--webhook", "partner")
    assert scoped.returncode == 0, scoped.stderr
    partner_key = scoped.stdout.strip()
    other = apikey_cli(serve.default_store, "create", "other", "--webhook", serve.webhook)
    expiring = apikey_cli(serve.default_store, "create", "brief", "--expires-in", "1s")
    other_key, expiring_key = other.stdout.strip(), expiring.stdout.strip()

    async with aiohttp.ClientSession() as session:

        async def post(hook: str, data: bytes | str = b"{}", **kwargs) -> tuple[int, str]:
            headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
            async with session.post(
                f"{server.url}/webhooks/{hook}", data=data, headers=headers, **kwargs
            ) as response:
                return response.status, await response.text()

        async def stored() -> int:
            async with session.get(
                f"{server.url}/api/v1/triggerinstances", headers={"St2-Api-Key": admin}
            ) as response:
                assert response.status == 200
                return int(response.headers["X-Total-Count"])

        # --- accepted: one of each, signed by independent code --------------------------
        status, text = await post(
            "github-push",
            GITHUB_PAYLOAD,
            headers={
                "Content-Type": "text/plain",
                "X-Hub-Signature-256": GITHUB_SIGNATURE,
                "X-GitHub-Delivery": "d-1",
            },
        )
        assert status == 202, text
        payload = json.dumps({"type": "invoice.paid"})
        stripe_header = stripe.WebhookSignature.generate_signature_header(payload, STRIPE_SECRET)
        status, text = await post("payments", payload, headers={"Stripe-Signature": stripe_header})
        assert status == 202, text
        signer = standardwebhooks.Webhook(BILLING_SECRET)
        now = datetime.now(UTC)
        billing_body = json.dumps({"event": "paid"})
        billing_headers = {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign("msg_1", now, billing_body),
        }
        status, text = await post("billing", billing_body, headers=billing_headers)
        assert status == 202 and json.loads(text)["duplicate"] is False, text
        good_token = jwt.encode({"exp": int(time.time()) + 60}, private_key, algorithm="RS256")
        status, text = await post("tokened", headers={"Authorization": f"Bearer {good_token}"})
        assert status == 202, text
        status, text = await post("partner", params={"token": partner_key})
        assert status == 202, text
        accepted = await stored()
        assert accepted == 5

        # --- refused, each with its status; nothing stored -------------------------------
        def github(signature: str | None, body: bytes = GITHUB_PAYLOAD) -> tuple:
            headers = {"Content-Type": "text/plain"}
            if signature is not None:
                headers["X-Hub-Signature-256"] = signature
            return ("github-push", body, headers, 401)

        stale = now - timedelta(seconds=1000)
        future = now + timedelta(seconds=1000)
        rsa_public_bytes = public_pem.encode()
        claims = {"exp": int(time.time()) + 60}
        cases = {
            "github missing": github(None),
            "github truncated": github(GITHUB_SIGNATURE[:-6]),
            "github uppercase": github(GITHUB_SIGNATURE.upper()),
            "github wrong scheme": github("sha1=" + GITHUB_SIGNATURE[7:47]),
            "github other body": github(GITHUB_SIGNATURE, b"Hello, World?"),
            "stripe over another body": (
                "payments",
                json.dumps({"type": "invoice.refunded"}),
                {"Stripe-Signature": stripe_header},
                401,
            ),
            "stripe stale": (
                "payments",
                payload,
                {
                    "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(
                        payload, STRIPE_SECRET, timestamp=int(stale.timestamp())
                    )
                },
                401,
            ),
            "standard-webhooks stale": (
                "billing",
                billing_body,
                {
                    "webhook-id": "msg_2",
                    "webhook-timestamp": str(int(stale.timestamp())),
                    "webhook-signature": signer.sign("msg_2", stale, billing_body),
                },
                401,
            ),
            "standard-webhooks future": (
                "billing",
                billing_body,
                {
                    "webhook-id": "msg_3",
                    "webhook-timestamp": str(int(future.timestamp())),
                    "webhook-signature": signer.sign("msg_3", future, billing_body),
                },
                401,
            ),
            "jwt alg none": (
                "tokened",
                b"{}",
                {"Authorization": "Bearer " + jwt.encode(claims, None, algorithm="none")},
                401,
            ),
            "jwt HS256 keyed with the RSA public key": (
                "tokened",
                b"{}",
                {"Authorization": "Bearer " + hs256_signed_with(rsa_public_bytes, claims)},
                401,
            ),
            "no key": ("partner", b"{}", {}, 401),
            "key for another webhook": ("partner", b"{}", {"St2-Api-Key": other_key}, 403),
        }
        await asyncio.sleep(1.1)  # the 1 s key has expired by now
        cases["expired key"] = ("partner", b"{}", {"St2-Api-Key": expiring_key}, 403)
        for name, (hook, body, headers, expected) in cases.items():
            status, text = await post(hook, body, headers=headers)
            assert status == expected, f"{name}: {status} {text}"
            assert "faultstring" in json.loads(text), name
            for secret in (GITHUB_SECRET, STRIPE_SECRET, BILLING_SECRET, partner_key, other_key):
                assert secret not in text, name
        # Replays: the same delivery again is answered as a duplicate, nothing new stored.
        status, text = await post("billing", billing_body, headers=billing_headers)
        assert status == 202 and json.loads(text)["duplicate"] is True, text
        status, text = await post(
            "github-push",
            GITHUB_PAYLOAD,
            headers={
                "Content-Type": "text/plain",
                "X-Hub-Signature-256": GITHUB_SIGNATURE,
                "X-GitHub-Delivery": "d-1",
            },
        )
        assert status == 202 and json.loads(text)["duplicate"] is True, text
        assert await stored() == accepted

    log = server.log_text()
    for secret in (GITHUB_SECRET, STRIPE_SECRET, partner_key, other_key):
        assert secret not in log
    assert server.terminate() == 0


def test_apikey_cli_errors_are_one_line_and_non_zero(tmp_path):
    store = f"sqlite:///{tmp_path / 'keys.db'}"
    created = apikey_cli(store, "create", "ci", "--expires-in", "30d", "--admin")
    assert created.returncode == 0 and created.stdout.strip().startswith("hy_")
    listed = apikey_cli(store, "list", "--json")
    (entry,) = json.loads(listed.stdout)
    assert entry["name"] == "ci" and entry["admin"] is True
    assert created.stdout.strip() not in listed.stdout
    extended = apikey_cli(store, "extend", entry["id"], "--by", "1d")
    assert extended.returncode == 0 and entry["id"] in extended.stdout
    for args in (("extend", "nope", "--by", "1d"), ("create", "x", "--expires-in", "3w")):
        failed = apikey_cli(store, *args)
        assert failed.returncode != 0
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
        assert "Traceback" not in failed.stderr
    deleted = apikey_cli(store, "delete", entry["id"])
    assert deleted.returncode == 0
    assert json.loads(apikey_cli(store, "list", "--json").stdout) == []
