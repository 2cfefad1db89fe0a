"""Outbound signatures, checked with independent verifiers (standardwebhooks, PyJWT, hmac)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import stat
import time

import jwt
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from engine.errors import ConfigError, RegistryError
from engine.outbound import signing
from engine.outbound.key_ring import INDEX_FILE, KeyRing, jwk_thumbprint
from engine.outbound.signing import generate_secret, sign_headers

BODY = b'{"id":"evt_1","type":"execution.updated","data":{"big":12345678901234567890}}'
TEST_KEY_SIZE = 2048  # production default is 3072; 2048 keeps key generation quick here


def now_seconds() -> int:
    return int(time.time())


def verify_rs256(jwks: dict, kid: str, signature: bytes, body: bytes) -> None:
    """Verify like a receiver: pick the JWK by kid, check RS256 with PyJWT's key object."""
    [jwk] = [key for key in jwks["keys"] if key["kid"] == kid]
    public_key = jwt.PyJWK(jwk).key
    public_key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())


@pytest.fixture
def keyring(tmp_path):
    return KeyRing.load_or_create(
        tmp_path / "keys", passphrase=b"s3cret", grace_seconds=3600, key_size=TEST_KEY_SIZE
    )


# --- standard-webhooks ---------------------------------------------------------


def test_standard_webhooks_signature_verifies_with_the_reference_library():
    secret = generate_secret()
    headers = sign_headers(
        "standard-webhooks",
        body=BODY,
        message_id="msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
        timestamp=now_seconds(),
        secrets=[secret],
    )
    assert headers["webhook-id"] == "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
    assert headers["webhook-signature"].startswith("v1,")
    Webhook(secret).verify(BODY, headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"evt_1", b"evt_2"), headers, json_parse=False)


def test_standard_webhooks_is_the_default_scheme():
    assert signing.DEFAULT_SCHEME == "standard-webhooks"


def test_rotation_signs_with_new_and_old_secret():
    new, old, unrelated = generate_secret(), generate_secret(), generate_secret()
    headers = sign_headers(
        "standard-webhooks", body=BODY, message_id="m1", timestamp=now_seconds(), secrets=[new, old]
    )
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(BODY, headers, json_parse=False)
    Webhook(old).verify(BODY, headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(unrelated).verify(BODY, headers, json_parse=False)


def test_generated_secret_has_the_standard_webhooks_format():
    first, second = generate_secret(), generate_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) >= 24


def test_standard_webhooks_refuses_a_secret_that_is_not_base64():
    with pytest.raises(ConfigError, match="whsec_"):
        sign_headers(
            "standard-webhooks", body=BODY, message_id="m", timestamp=1, secrets=["not base64!"]
        )


# --- hmac-sha256 -----------------------------------------------------------------


def test_hmac_sha256_hex_signature_in_default_header():
    headers = sign_headers(
        "hmac-sha256", body=BODY, message_id="m7", timestamp=1700000000, secrets=["shh"]
    )
    expected = hmac.new(b"shh", BODY, hashlib.sha256).hexdigest()
    assert headers["X-Hookyard-Signature"] == f"sha256={expected}"
    assert headers["X-Hookyard-Timestamp"] == "1700000000"
    assert headers["X-Hookyard-Id"] == "m7"


def test_hmac_sha256_custom_header_timestamp_and_rotation():
    headers = sign_headers(
        "hmac-sha256",
        body=BODY,
        message_id="m",
        timestamp=1700000000,
        secrets=["new", "old"],
        options={"header": "X-Hub-Signature-256", "include_timestamp": True},
    )
    signed = b"1700000000." + BODY
    assert "X-Hookyard-Signature" not in headers
    assert headers["X-Hub-Signature-256"] == ", ".join(
        "sha256=" + hmac.new(key, signed, hashlib.sha256).hexdigest() for key in (b"new", b"old")
    )


# --- rsa-sha256 and the key ring ---------------------------------------------------


def test_rsa_signature_verifies_with_the_published_jwks(keyring):
    headers = sign_headers(
        "rsa-sha256", body=BODY, message_id="m", timestamp=1, secrets=[], keyring=keyring
    )
    kid = headers["X-Hookyard-Signature-Rsa-Sha256-Key-Id"]
    signature = base64.b64decode(headers["X-Hookyard-Signature-Rsa-Sha256"])
    assert kid == keyring.current_kid
    verify_rs256(keyring.jwks(), kid, signature, BODY)
    with pytest.raises(InvalidSignature):
        verify_rs256(keyring.jwks(), kid, signature, BODY + b" ")


def test_jwks_entries_are_rs256_signing_keys_with_thumbprint_ids(keyring):
    [entry] = keyring.jwks()["keys"]
    assert {entry["kty"], entry["use"], entry["alg"]} == {"RSA", "sig", "RS256"}
    assert entry["kid"] == jwk_thumbprint(jwt.PyJWK(entry).key)


def test_kid_is_the_rfc_7638_thumbprint():
    # The example key of RFC 7638 section 3.1 and the thumbprint the RFC gives for it.
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
        "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F"
        "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
        "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    modulus = int.from_bytes(base64.urlsafe_b64decode(n + "=" * (-len(n) % 4)), "big")
    public_key = rsa.RSAPublicNumbers(65537, modulus).public_key()
    assert jwk_thumbprint(public_key) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_rotation_keeps_the_old_key_published_during_grace_only(keyring):
    start = time.time()
    old_kid, old_signature = keyring.sign(BODY)
    new_kid = keyring.rotate(now=start)
    assert new_kid != old_kid and keyring.current_kid == new_kid

    during_grace = keyring.jwks(now=start + 3599)
    assert [key["kid"] for key in during_grace["keys"]] == [new_kid, old_kid]
    verify_rs256(during_grace, old_kid, old_signature, BODY)
    kid, signature = keyring.sign(BODY)
    assert kid == new_kid
    verify_rs256(during_grace, new_kid, signature, BODY)

    after_grace = keyring.jwks(now=start + 3601)
    assert [key["kid"] for key in after_grace["keys"]] == [new_kid]


def test_key_directory_survives_restart_and_prunes_expired_keys(tmp_path):
    directory = tmp_path / "keys"
    start = time.time()
    first = KeyRing.load_or_create(
        directory, passphrase=None, grace_seconds=60, now=start, key_size=TEST_KEY_SIZE
    )
    old_kid = first.current_kid
    assert stat.S_IMODE((directory / f"{old_kid}.pem").stat().st_mode) == 0o600
    assert (directory / INDEX_FILE).exists()

    restarted = KeyRing.load_or_create(
        directory, passphrase=None, grace_seconds=60, now=start + 1, key_size=TEST_KEY_SIZE
    )
    assert restarted.current_kid == old_kid

    new_kid = restarted.rotate(now=start + 2)
    in_grace = KeyRing.load_or_create(directory, passphrase=None, grace_seconds=60, now=start + 30)
    assert in_grace.current_kid == new_kid
    assert [key["kid"] for key in in_grace.jwks(now=start + 30)["keys"]] == [new_kid, old_kid]

    KeyRing.load_or_create(directory, passphrase=None, grace_seconds=60, now=start + 120)
    assert not (directory / f"{old_kid}.pem").exists()
    assert (directory / f"{new_kid}.pem").exists()


def test_passphrase_encrypts_the_key_file(tmp_path, keyring):
    pem = (tmp_path / "keys" / f"{keyring.current_kid}.pem").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in pem
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, password=None)
    with pytest.raises(ConfigError, match="passphrase"):
        KeyRing.load_or_create(tmp_path / "keys", passphrase=b"wrong", grace_seconds=3600)
    with pytest.raises(ConfigError, match="passphrase"):
        KeyRing.load_or_create(tmp_path / "keys", passphrase=None, grace_seconds=3600)


def test_default_key_size_is_3072_bits(tmp_path):
    ring = KeyRing.load_or_create(tmp_path, passphrase=None, grace_seconds=0)
    [entry] = ring.jwks()["keys"]
    assert jwt.PyJWK(entry).key.key_size == 3072


def test_configured_pem_signs_and_refuses_rotation():
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=TEST_KEY_SIZE)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    ring = KeyRing.from_pem(pem, b"pw")
    assert ring.current_kid == jwk_thumbprint(private_key.public_key())
    kid, signature = ring.sign(BODY)
    verify_rs256(ring.jwks(), kid, signature, BODY)
    with pytest.raises(ConfigError, match="configured PEM"):
        ring.rotate()


def test_from_pem_refuses_garbage():
    with pytest.raises(ConfigError, match="cannot load"):
        KeyRing.from_pem(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")


# --- the registry ------------------------------------------------------------------


def test_unknown_scheme_names_the_valid_ones():
    with pytest.raises(ConfigError) as caught:
        sign_headers("hmac-md5", body=BODY, message_id="m", timestamp=1, secrets=["s"])
    for name in ("standard-webhooks", "hmac-sha256", "rsa-sha256"):
        assert name in str(caught.value)


def test_duplicate_scheme_is_refused():
    existing = signing.get_scheme("hmac-sha256")
    with pytest.raises(RegistryError, match="already registered"):
        signing.register_scheme(existing)


def test_unknown_or_bad_options_are_refused_early():
    with pytest.raises(ConfigError, match="no option 'encoding'"):
        signing.validate("hmac-sha256", options={"encoding": "base64"}, secrets=["s"])
    with pytest.raises(ConfigError, match="header name"):
        signing.validate("hmac-sha256", options={"header": "X Bad: header"}, secrets=["s"])
    with pytest.raises(ConfigError, match="no option"):
        signing.validate("standard-webhooks", options={"header": "X"}, secrets=[generate_secret()])


def test_hmac_schemes_need_a_secret_and_rsa_needs_a_keyring():
    with pytest.raises(ConfigError, match="at least one secret"):
        sign_headers("standard-webhooks", body=BODY, message_id="m", timestamp=1, secrets=[])
    with pytest.raises(ConfigError, match="key ring"):
        sign_headers("rsa-sha256", body=BODY, message_id="m", timestamp=1, secrets=[])
