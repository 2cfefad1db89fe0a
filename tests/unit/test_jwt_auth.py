"""JWT verification with tokens made by pyjwt and keys made by cryptography."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from engine.errors import AuthError, ConfigError
from engine.http.jwt_auth import JwtVerifier, TokenError

WHERE = "config.yaml:20: webhooks.partner.jwt"
NOW = 1_700_000_000
SECRET = "a-shared-secret-of-at-least-32-bytes!"


def public_pem(private_key) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims(**overrides) -> dict:
    return {"sub": "partner", "exp": NOW + 60, **overrides}


def refused(verifier: JwtVerifier, headers, now=NOW) -> TokenError:
    with pytest.raises(TokenError) as caught:
        verifier.verify(headers, now=now)
    return caught.value


@pytest.fixture
def hs256():
    return JwtVerifier({"algorithms": ["HS256"], "secret": SECRET}, where=WHERE)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- accepted tokens -------------------------------------------------------------


def test_hs256_token_is_accepted_and_its_claims_returned(hs256):
    token = jwt.encode(claims(n=1), SECRET, algorithm="HS256")
    assert hs256.verify(bearer(token), now=NOW) == claims(n=1)


def test_rs256_token_is_accepted(rsa_key):
    verifier = JwtVerifier(
        {"algorithms": ["RS256"], "public_key": public_pem(rsa_key)}, where=WHERE
    )
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert verifier.verify(bearer(token), now=NOW)["sub"] == "partner"


def test_es256_token_is_accepted(ec_key):
    verifier = JwtVerifier({"algorithms": ["ES256"], "public_key": public_pem(ec_key)}, where=WHERE)
    token = jwt.encode(claims(), ec_key, algorithm="ES256")
    assert verifier.verify(bearer(token), now=NOW)["sub"] == "partner"


def test_header_name_is_case_insensitive_and_configurable():
    config = {"algorithms": ["HS256"], "secret": SECRET, "header": "X-Partner-Token"}
    verifier = JwtVerifier(config, where=WHERE)
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert verifier.verify({"x-partner-token": token}, now=NOW)["sub"] == "partner"
    assert verifier.verify({"X-PARTNER-TOKEN": f"Bearer {token}"}, now=NOW)["sub"] == "partner"
    assert refused(verifier, bearer(token)).reason == "missing"


def test_audience_and_issuer_are_checked_when_configured():
    config = {"algorithms": ["HS256"], "secret": SECRET, "audience": "hookyard", "issuer": "idp"}
    verifier = JwtVerifier(config, where=WHERE)
    good = jwt.encode(claims(aud="hookyard", iss="idp"), SECRET, algorithm="HS256")
    assert verifier.verify(bearer(good), now=NOW)["aud"] == "hookyard"

    wrong_aud = jwt.encode(claims(aud="other", iss="idp"), SECRET, algorithm="HS256")
    error = refused(verifier, bearer(wrong_aud))
    assert (error.reason, str(error)) == ("audience", "token audience not accepted")

    wrong_iss = jwt.encode(claims(aud="hookyard", iss="evil"), SECRET, algorithm="HS256")
    error = refused(verifier, bearer(wrong_iss))
    assert (error.reason, str(error)) == ("issuer", "token issuer not accepted")

    no_aud = jwt.encode(claims(iss="idp"), SECRET, algorithm="HS256")
    assert str(refused(verifier, bearer(no_aud))) == "token has no 'aud' claim"


def test_leeway_applies_to_expiry():
    config = {"algorithms": ["HS256"], "secret": SECRET, "leeway": 30}
    verifier = JwtVerifier(config, where=WHERE)
    token = jwt.encode(claims(exp=NOW - 20), SECRET, algorithm="HS256")
    assert verifier.verify(bearer(token), now=NOW)["sub"] == "partner"
    assert refused(verifier, bearer(token), now=NOW + 11).reason == "expired"


# --- refused tokens --------------------------------------------------------------


def test_failures_are_401_auth_errors(hs256):
    error = refused(hs256, {})
    assert isinstance(error, AuthError)
    assert error.status == 401
    assert str(error) == "missing bearer token"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"X-Other": "Bearer abc"},
    ],
)
def test_missing_bearer_token(hs256, headers):
    assert refused(hs256, headers).reason == "missing"


def test_expired_token(hs256):
    token = jwt.encode(claims(exp=NOW), SECRET, algorithm="HS256")
    error = refused(hs256, bearer(token))
    assert (error.reason, str(error)) == ("expired", "token expired")


def test_token_without_exp_is_refused(hs256):
    token = jwt.encode({"sub": "partner"}, SECRET, algorithm="HS256")
    error = refused(hs256, bearer(token))
    assert (error.reason, str(error)) == ("claims", "token has no 'exp' claim")


def test_token_not_yet_valid(hs256):
    token = jwt.encode(claims(nbf=NOW + 60), SECRET, algorithm="HS256")
    assert refused(hs256, bearer(token)).reason == "not_yet_valid"


def test_non_numeric_exp_is_refused(hs256):
    token = jwt.encode(claims(exp="tomorrow"), SECRET, algorithm="HS256")
    assert refused(hs256, bearer(token)).reason == "claims"


def test_token_signed_with_another_secret(hs256):
    token = jwt.encode(claims(), "another-secret-that-is-32-bytes-long!", algorithm="HS256")
    error = refused(hs256, bearer(token))
    assert (error.reason, str(error)) == ("signature", "token signature invalid")


def test_tampered_payload_is_refused(hs256):
    header, _, signature = jwt.encode(claims(), SECRET, algorithm="HS256").split(".")
    forged = b64url(json.dumps(claims(sub="admin")).encode())
    assert refused(hs256, bearer(f"{header}.{forged}.{signature}")).reason == "signature"


def test_alg_none_token_is_refused(hs256):
    token = jwt.encode(claims(), None, algorithm="none")
    error = refused(hs256, bearer(token))
    assert (error.reason, str(error)) == ("algorithm", "token algorithm none not allowed")


def test_hs256_token_keyed_with_the_rsa_public_key_is_refused(rsa_key):
    pem = public_pem(rsa_key)
    verifier = JwtVerifier({"algorithms": ["RS256"], "public_key": pem}, where=WHERE)
    # Built by hand: pyjwt itself refuses to use a PEM as an HMAC secret.
    signing_input = (
        b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        + "."
        + b64url(json.dumps(claims()).encode())
    )
    mac = hmac.new(pem.encode(), signing_input.encode(), hashlib.sha256).digest()
    error = refused(verifier, bearer(f"{signing_input}.{b64url(mac)}"))
    assert (error.reason, str(error)) == ("algorithm", "token algorithm HS256 not allowed")


def test_rs256_token_refused_when_config_says_hs256(hs256, rsa_key):
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert str(refused(hs256, bearer(token))) == "token algorithm RS256 not allowed"


def test_rs256_token_signed_by_another_key_is_refused(rsa_key):
    verifier = JwtVerifier(
        {"algorithms": ["RS256"], "public_key": public_pem(rsa_key)}, where=WHERE
    )
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(), stranger, algorithm="RS256")
    assert refused(verifier, bearer(token)).reason == "signature"


@pytest.mark.parametrize("token", ["not-a-token", "a.b.c", "a.b", "...."])
def test_malformed_tokens(hs256, token):
    assert refused(hs256, bearer(token)).reason == "malformed"


def test_a_hostile_alg_name_is_not_echoed(hs256):
    header = b64url(json.dumps({"alg": "<script>alert(1)</script>"}).encode())
    token = f"{header}.{b64url(json.dumps(claims()).encode())}.sig"
    error = refused(hs256, bearer(token))
    assert error.reason == "algorithm"
    assert "<script>" not in str(error)


# --- configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"secret": SECRET}, r"jwt\.algorithms: required"),
        ({"algorithms": [], "secret": SECRET}, r"jwt\.algorithms: required"),
        ({"algorithms": "HS256", "secret": SECRET}, r"jwt\.algorithms: required"),
        ({"algorithms": ["none"], "secret": SECRET}, r"jwt\.algorithms: 'none'"),
        ({"algorithms": ["HS256", "None"], "secret": SECRET}, r"jwt\.algorithms: 'none'"),
        ({"algorithms": ["HS999"], "secret": SECRET}, r"unknown algorithm 'HS999'; valid: HS256"),
        ({"algorithms": ["HS256", "RS256"], "secret": SECRET}, "do not mix"),
        ({"algorithms": ["HS256"]}, r"jwt\.secret: required"),
        ({"algorithms": ["HS256"], "secret": "short"}, r"jwt\.secret: too short"),
        ({"algorithms": ["RS256"]}, r"jwt\.public_key: required"),
        ({"algorithms": ["RS256"], "public_key": "not a pem"}, r"jwt\.public_key: not a valid"),
        ({"algorithms": ["HS256"], "secret": SECRET, "aud": "x"}, r"jwt\.aud: unknown jwt option"),
        ({"algorithms": ["HS256"], "secret": SECRET, "leeway": -1}, r"jwt\.leeway"),
        ({"algorithms": ["HS256"], "secret": SECRET, "audience": 5}, r"jwt\.audience"),
    ],
)
def test_config_errors_name_the_field(config, expected):
    with pytest.raises(ConfigError, match=expected) as caught:
        JwtVerifier(config, where=WHERE)
    assert str(caught.value).startswith(WHERE)


def test_secret_with_an_rs_algorithm_is_a_config_error(rsa_key):
    config = {"algorithms": ["RS256"], "public_key": public_pem(rsa_key), "secret": SECRET}
    with pytest.raises(ConfigError, match=r"jwt\.secret: not used with RS256"):
        JwtVerifier(config, where=WHERE)


def test_rsa_public_key_as_an_hmac_secret_is_a_config_error(rsa_key):
    with pytest.raises(ConfigError, match=r"jwt\.secret: not a valid key for HS256"):
        JwtVerifier({"algorithms": ["HS256"], "secret": public_pem(rsa_key)}, where=WHERE)


def test_private_key_given_as_public_key_is_a_config_error(rsa_key):
    private_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    with pytest.raises(ConfigError, match="holds a private key"):
        JwtVerifier({"algorithms": ["RS256"], "public_key": private_pem}, where=WHERE)


def test_key_of_the_wrong_family_is_a_config_error(ec_key):
    config = {"algorithms": ["RS256"], "public_key": public_pem(ec_key)}
    with pytest.raises(ConfigError, match="not a valid key for RS256"):
        JwtVerifier(config, where=WHERE)


def test_small_rsa_key_is_a_config_error():
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ConfigError, match="too short for RS256"):
        JwtVerifier({"algorithms": ["RS256"], "public_key": public_pem(small)}, where=WHERE)


def test_secret_is_not_in_repr(hs256):
    assert SECRET not in repr(hs256)
