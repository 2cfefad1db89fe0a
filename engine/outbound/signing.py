"""Outbound webhook signature schemes: a registry by name, each turning a body into headers.

Pure apart from the RSA key ring it is handed: a scheme gets the raw body, the message id,
the Unix timestamp and the subscription's secrets (newest first) and returns the headers
to send. Options and secrets are checked by `validate()` when a subscription or a
`core.sendwebhook` call is configured, so a bad scheme name, option or secret fails at
load time, not when the first event fires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets as random_source
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from engine.errors import ConfigError, RegistryError

if TYPE_CHECKING:
    from engine.outbound.key_ring import KeyRing

DEFAULT_SCHEME = "standard-webhooks"
STANDARD_WEBHOOKS_SECRET_PREFIX = "whsec_"
DEFAULT_HMAC_HEADER = "X-Hookyard-Signature"
RSA_SIGNATURE_HEADER = "X-Hookyard-Signature-Rsa-Sha256"
RSA_KEY_ID_HEADER = "X-Hookyard-Signature-Rsa-Sha256-Key-Id"
ID_HEADER = "X-Hookyard-Id"
TIMESTAMP_HEADER = "X-Hookyard-Timestamp"

_NO_OPTIONS: Mapping[str, Any] = MappingProxyType({})
# RFC 9110 token characters: anything else cannot be a header name.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True)
class SigningRequest:
    """Everything a scheme may sign; `secrets` are newest first."""

    body: bytes
    message_id: str
    timestamp: int
    secrets: tuple[str, ...]
    options: Mapping[str, Any]
    keyring: KeyRing | None


@dataclass(frozen=True)
class OutboundScheme:
    name: str
    sign: Callable[[SigningRequest], dict[str, str]]
    # option name -> checker raising ConfigError for a bad value
    options: Mapping[str, Callable[[str, Any], None]] = field(default_factory=dict)
    needs_secret: bool = True
    needs_keyring: bool = False
    check_secret: Callable[[str], None] | None = None


_SCHEMES: dict[str, OutboundScheme] = {}


def register_scheme(scheme: OutboundScheme) -> OutboundScheme:
    if scheme.name in _SCHEMES:
        raise RegistryError(f"outbound signature scheme {scheme.name!r} is already registered")
    _SCHEMES[scheme.name] = scheme
    return scheme


def scheme_names() -> tuple[str, ...]:
    return tuple(sorted(_SCHEMES))


def get_scheme(name: str) -> OutboundScheme:
    try:
        return _SCHEMES[name]
    except KeyError:
        raise ConfigError(
            f"unknown outbound signature scheme {name!r}; valid schemes: "
            + ", ".join(scheme_names())
        ) from None


def validate(
    scheme: str,
    *,
    options: Mapping[str, Any] = _NO_OPTIONS,
    secrets: Sequence[str] = (),
    keyring_available: bool = True,
) -> OutboundScheme:
    """Check a scheme name, its options and secrets; raise ConfigError saying what to fix."""
    found = get_scheme(scheme)
    for key, value in options.items():
        checker = found.options.get(key)
        if checker is None:
            valid = ", ".join(sorted(found.options)) or "none"
            raise ConfigError(
                f"signature scheme {scheme!r} has no option {key!r}; valid options: {valid}"
            )
        checker(key, value)
    if found.needs_secret:
        if not secrets:
            raise ConfigError(f"signature scheme {scheme!r} needs at least one secret")
        for secret in secrets:
            if not isinstance(secret, str) or not secret:
                raise ConfigError(f"signature scheme {scheme!r}: secrets must be non-empty text")
            if found.check_secret is not None:
                found.check_secret(secret)
    if found.needs_keyring and not keyring_available:
        raise ConfigError(
            f"signature scheme {scheme!r} needs the engine's RSA key ring, which is not loaded"
        )
    return found


def sign_headers(
    scheme: str,
    *,
    body: bytes,
    message_id: str,
    timestamp: int,
    secrets: Sequence[str],
    options: Mapping[str, Any] = _NO_OPTIONS,
    keyring: KeyRing | None = None,
) -> dict[str, str]:
    """Return the headers that sign `body` with `scheme`; `secrets` are newest first."""
    found = validate(
        scheme, options=options, secrets=secrets, keyring_available=keyring is not None
    )
    request = SigningRequest(
        body=body,
        message_id=message_id,
        timestamp=int(timestamp),
        secrets=tuple(secrets),
        options=options,
        keyring=keyring,
    )
    return found.sign(request)


def generate_secret() -> str:
    """A new Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    key = random_source.token_bytes(32)
    return STANDARD_WEBHOOKS_SECRET_PREFIX + base64.b64encode(key).decode()


# --- standard-webhooks -------------------------------------------------------


def decode_standard_webhooks_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_<base64>`` secret (the prefix is optional, as in the spec)."""
    encoded = secret.removeprefix(STANDARD_WEBHOOKS_SECRET_PREFIX)
    # Reference libraries accept unpadded base64, so we do too.
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            "a standard-webhooks secret must be 'whsec_' followed by base64 "
            "(generate one with `generate_secret()` or leave the secret out)"
        ) from None
    if not key:
        raise ConfigError("a standard-webhooks secret must not be empty after 'whsec_'")
    return key


def _check_standard_webhooks_secret(secret: str) -> None:
    decode_standard_webhooks_secret(secret)


def _sign_standard_webhooks(request: SigningRequest) -> dict[str, str]:
    signed = f"{request.message_id}.{request.timestamp}.".encode() + request.body
    # One entry per secret: during a rotation receivers holding either secret verify.
    signatures = " ".join(
        "v1,"
        + base64.b64encode(
            hmac.digest(decode_standard_webhooks_secret(secret), signed, hashlib.sha256)
        ).decode()
        for secret in request.secrets
    )
    return {
        "webhook-id": request.message_id,
        "webhook-timestamp": str(request.timestamp),
        "webhook-signature": signatures,
    }


# --- hmac-sha256 -------------------------------------------------------------


def _check_header_name(key: str, value: Any) -> None:
    if not isinstance(value, str) or not _HEADER_NAME.fullmatch(value):
        raise ConfigError(f"option {key!r} must be an HTTP header name, got {value!r}")


def _check_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"option {key!r} must be true or false, got {value!r}")


def _sign_hmac_sha256(request: SigningRequest) -> dict[str, str]:
    header = request.options.get("header", DEFAULT_HMAC_HEADER)
    signed = request.body
    if request.options.get("include_timestamp", False):
        # Opt-in replay protection: the receiver recomputes over "<timestamp>.<body>".
        signed = f"{request.timestamp}.".encode() + request.body
    # The secret text itself is the key (GitHub's X-Hub-Signature-256 convention), so a
    # receiver configured with the same string verifies without decoding anything.
    values = ", ".join(
        "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        for secret in request.secrets
    )
    return {
        header: values,
        TIMESTAMP_HEADER: str(request.timestamp),
        ID_HEADER: request.message_id,
    }


# --- rsa-sha256 --------------------------------------------------------------


def _sign_rsa_sha256(request: SigningRequest) -> dict[str, str]:
    assert request.keyring is not None  # validate() refused a missing key ring
    kid, signature = request.keyring.sign(request.body)
    return {
        RSA_SIGNATURE_HEADER: base64.b64encode(signature).decode(),
        RSA_KEY_ID_HEADER: kid,
        TIMESTAMP_HEADER: str(request.timestamp),
        ID_HEADER: request.message_id,
    }


register_scheme(
    OutboundScheme(
        name="standard-webhooks",
        sign=_sign_standard_webhooks,
        check_secret=_check_standard_webhooks_secret,
    )
)
register_scheme(
    OutboundScheme(
        name="hmac-sha256",
        sign=_sign_hmac_sha256,
        options={"header": _check_header_name, "include_timestamp": _check_bool},
    )
)
register_scheme(
    OutboundScheme(
        name="rsa-sha256",
        sign=_sign_rsa_sha256,
        needs_secret=False,
        needs_keyring=True,
    )
)
