"""The rsa-sha256 signing key ring: rotation by API and CLI, a configured PEM, one ring."""

from __future__ import annotations

import subprocess
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from engine.config import OutboundSettings, Settings
from engine.http.context import RUNTIME
from engine.outbound import signing
from tests.support.app import app_client, settings_for


def keyring_settings(tmp_path, **outbound) -> Settings:
    return settings_for(
        tmp_path, outbound=OutboundSettings(keyring_dir=str(tmp_path / "keys"), **outbound)
    )


def verify(jwks: dict, headers: dict, body: bytes) -> str:
    kid = headers["X-Hookyard-Signature-Rsa-Sha256-Key-Id"]
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == kid]
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    key = jwt.PyJWK(jwk).key
    signature = base64.b64decode(headers["X-Hookyard-Signature-Rsa-Sha256"])
    key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
    return kid


async def test_rotation_by_api_keeps_the_old_key_published_and_signs_with_the_new(tmp_path):
    async with app_client(keyring_settings(tmp_path)) as client:
        runtime = client.app[RUNTIME]
        before = await (await client.get("/.well-known/jwks.json")).json()
        (old,) = [k["kid"] for k in before["keys"]]
        response = await client.post("/api/v1/events/signing-keys/rotate")
        assert response.status == 201
        rotated = await response.json()
        assert rotated["kid"] != old
        after = await (await client.get("/.well-known/jwks.json")).json()
        assert [k["kid"] for k in after["keys"]] == [rotated["kid"], old]
        # Every user of the process's ring (runners, deliveries) signs with the new key.
        ring = await runtime.keyrings.get()
        headers = signing.sign_headers(
            "rsa-sha256", body=b"{}", message_id="m", timestamp=1, secrets=(), keyring=ring
        )
        assert verify(after, headers, b"{}") == rotated["kid"]


def test_cli_rotation_is_seen_by_a_server_sharing_the_directory(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"outbound: {{keyring_dir: {tmp_path / 'keys'}}}\nrules_dirs: []\n")
    shown = subprocess.run(
        [sys.executable, "-m", "engine", "signing-key", "show", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    import json

    (first,) = json.loads(shown.stdout)["keys"]
    rotated = subprocess.run(
        [sys.executable, "-m", "engine", "signing-key", "rotate", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rotated.returncode == 0, rotated.stderr
    assert first["kid"] in rotated.stdout
    again = json.loads(
        subprocess.run(
            [sys.executable, "-m", "engine", "signing-key", "show", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    )
    assert len(again["keys"]) == 2 and again["keys"][1]["kid"] == first["kid"]


async def test_configured_pem_signs_and_cannot_be_rotated_by_api(tmp_path):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "signing.pem"
    pem.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    settings = keyring_settings(tmp_path, signing_key_pem=str(pem))
    async with app_client(settings) as client:
        jwks = await (await client.get("/.well-known/jwks.json")).json()
        (jwk,) = jwks["keys"]
        assert jwt.PyJWK(jwk).key.public_numbers() == private.public_key().public_numbers()
        response = await client.post("/api/v1/events/signing-keys/rotate")
        assert response.status == 409
        assert "signing_key_pem" in (await response.json())["faultstring"]
        assert not (tmp_path / "keys").exists()


def test_cli_reports_an_unreadable_pem(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"outbound: {{signing_key_pem: {tmp_path / 'missing.pem'}}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "engine", "signing-key", "show", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot read" in result.stderr and "Traceback" not in result.stderr
