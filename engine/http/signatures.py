"""Inbound webhook signature schemes: a registry by name, each verifying raw bytes.

Pure: a scheme gets the request headers, the raw body and the current time, and either
returns a `VerifiedRequest` or raises `SignatureError`. The HTTP layer decides what to do
with either. Error messages say which check failed (missing, malformed, stale, mismatch)
and never echo the secret, the expected signature or where a given one differed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from engine.errors import AuthError, ConfigError, RegistryError

DEFAULT_TOLERANCE_SECONDS = 300

_DIGESTS: dict[str, Callable[[], Any]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}
_ENCODINGS = ("hex", "base64")
# Unix seconds as decimal ASCII digits only: str.isdigit() would also accept other scripts.
_TIMESTAMP = re.compile(r"[0-9]{1,15}")


class SignatureError(AuthError):
    """Raised when a request's signature is missing, malformed, stale or does not match."""

    REASONS: ClassVar[tuple[str, ...]] = ("missing", "malformed", "stale", "mismatch")
    # No registered scheme names webhook signatures; the challenge says what is expected.
    challenge = 'Signature realm="hookyard"'

    def __init__(self, reason: str, message: str) -> None:
        assert reason in self.REASONS, reason
        super().__init__(message, status=401)
        self.reason = reason


@dataclass(frozen=True)
class VerifiedRequest:
    scheme: str
    # The sender's id for this delivery (webhook-id, X-GitHub-Delivery...), used for dedupe.
    delivery_id: str | None


class SignatureScheme(Protocol):
    name: str
    header_names: tuple[str, ...]

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> VerifiedRequest: ...


# --- registry ----------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One option a scheme accepts in its `signature:` mapping."""

    kind: type | tuple[type, ...]
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()


_SchemeFactory = Callable[[dict[str, Any], str], SignatureScheme]


@dataclass(frozen=True)
class _Registration:
    options: dict[str, Option]
    factory: _SchemeFactory


_REGISTRY: dict[str, _Registration] = {}


def register_scheme(name: str, options: dict[str, Option], factory: _SchemeFactory) -> None:
    """Add a scheme; `factory(validated_options, where)` builds it."""
    if name in _REGISTRY:
        raise RegistryError(f"signature scheme {name!r} is already registered")
    _REGISTRY[name] = _Registration(options, factory)


def scheme_names() -> list[str]:
    return sorted(_REGISTRY)


def build_scheme(config: Mapping[str, Any], *, where: str) -> SignatureScheme:
    """Build the scheme a webhook's `signature:` mapping describes, or raise ConfigError."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"{where}: expected a mapping with 'scheme' and its options")
    valid = ", ".join(scheme_names())
    name = config.get("scheme")
    if name is None:
        raise ConfigError(f"{where}.scheme: missing; valid schemes: {valid}")
    registration = _REGISTRY.get(name) if isinstance(name, str) else None
    if registration is None:
        raise ConfigError(f"{where}.scheme: unknown signature scheme {name!r}; valid: {valid}")
    options = _validate_options(name, registration.options, config, where)
    return registration.factory(options, where)


def _validate_options(
    scheme: str, spec: dict[str, Option], config: Mapping[str, Any], where: str
) -> dict[str, Any]:
    known = ", ".join(sorted(spec))
    for key in config:
        if key != "scheme" and key not in spec:
            raise ConfigError(
                f"{where}.{key}: unknown option for scheme {scheme!r}; valid options: {known}"
            )
    values: dict[str, Any] = {}
    for key, option in spec.items():
        if key not in config or config[key] is None:
            if option.required:
                raise ConfigError(f"{where}.{key}: required by scheme {scheme!r}")
            values[key] = option.default
            continue
        value = config[key]
        # bool is an int subclass; `tolerance: true` is a mistake, not 1 second.
        if isinstance(value, bool) or not isinstance(value, option.kind):
            raise ConfigError(f"{where}.{key}: expected {_kind_name(option.kind)}")
        if option.choices and value not in option.choices:
            choices = ", ".join(option.choices)
            raise ConfigError(f"{where}.{key}: {value!r} is not one of: {choices}")
        values[key] = value
    return values


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({str: "a string", int: "a number", float: "a number"}[k] for k in kinds)


def _secret_bytes(value: str, where: str) -> bytes:
    if not value:
        raise ConfigError(f"{where}.secret: empty (is the environment variable set?)")
    return value.encode()


def _tolerance(value: float, where: str) -> float:
    if value <= 0:
        raise ConfigError(f"{where}.tolerance: must be a positive number of seconds")
    return float(value)


# --- shared checks -------------------------------------------------------------


def _lower_headers(headers: Mapping[str, str]) -> dict[str, list[str]]:
    # items() on a CIMultiDict yields every occurrence, so repeats are seen and refused.
    lowered: dict[str, list[str]] = {}
    for key, value in headers.items():
        lowered.setdefault(key.lower(), []).append(value)
    return lowered


def _header(headers: dict[str, list[str]], name: str) -> str:
    values = headers.get(name.lower())
    if not values or not values[0].strip():
        raise SignatureError("missing", f"missing {name} header")
    if len(values) > 1:
        # Two values leave it open which one was checked; a sender never needs that.
        raise SignatureError("malformed", f"malformed {name} header: given more than once")
    return values[0].strip()


def _optional_header(headers: dict[str, list[str]], name: str) -> str | None:
    values = headers.get(name.lower())
    return values[0].strip() if values and len(values) == 1 and values[0].strip() else None


def _timestamp(value: str, header: str) -> int:
    if not _TIMESTAMP.fullmatch(value):
        raise SignatureError("malformed", f"malformed {header}: expected Unix seconds")
    return int(value)


def _check_fresh(timestamp: int, now: float, tolerance: float) -> None:
    # Both directions: a future timestamp is as replayable later as a stale one is now.
    if abs(now - timestamp) > tolerance:
        shown = int(tolerance) if tolerance == int(tolerance) else tolerance
        raise SignatureError("stale", f"signature timestamp outside the {shown} s tolerance")


def _decode_hex(value: str, size: int) -> bytes | None:
    """Lower-case hex of exactly `size` bytes, as every preset sends, or None."""
    if len(value) != 2 * size or not re.fullmatch(r"[0-9a-f]*", value):
        return None
    return bytes.fromhex(value)


def _decode_base64(value: str, size: int) -> bytes | None:
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if len(decoded) == size else None


def _mac(key: bytes, algorithm: str, *parts: bytes) -> bytes:
    mac = hmac.new(key, digestmod=_DIGESTS[algorithm])
    for part in parts:
        mac.update(part)
    return mac.digest()


def _any_matches(expected: bytes, candidates: list[bytes]) -> bool:
    # Compare against every candidate so the time taken does not say which one matched.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    return matched


def _mismatch() -> SignatureError:
    return SignatureError("mismatch", "signature does not match the body")


# --- schemes -------------------------------------------------------------------


@dataclass(frozen=True)
class HmacScheme:
    """HMAC over the raw body in one header: `<prefix><hex or base64 digest>`."""

    name: str
    header: str
    secret: bytes = field(repr=False)
    algorithm: str = "sha256"
    prefix: str = ""
    encoding: str = "hex"
    delivery_header: str | None = None
    extra_headers: tuple[str, ...] = ()

    @property
    def header_names(self) -> tuple[str, ...]:
        return (self.header, *self.extra_headers)

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> VerifiedRequest:
        lowered = _lower_headers(headers)
        value = _header(lowered, self.header)
        size = _DIGESTS[self.algorithm]().digest_size
        given = None
        if value.startswith(self.prefix):
            encoded = value[len(self.prefix) :]
            decode = _decode_hex if self.encoding == "hex" else _decode_base64
            given = decode(encoded, size)
        if given is None:
            shape = "lower-case hex" if self.encoding == "hex" else "base64"
            raise SignatureError(
                "malformed",
                f"malformed {self.header} header: expected {self.prefix!r} followed by the "
                f"{shape} {self.algorithm.upper()} HMAC of the body",
            )
        if not hmac.compare_digest(_mac(self.secret, self.algorithm, body), given):
            raise _mismatch()
        delivery = _optional_header(lowered, self.delivery_header) if self.delivery_header else None
        return VerifiedRequest(self.name, delivery)


def _build_hmac(options: dict[str, Any], where: str) -> SignatureScheme:
    if not options["header"].strip():
        raise ConfigError(f"{where}.header: empty")
    return HmacScheme(
        name="hmac",
        header=options["header"].strip(),
        secret=_secret_bytes(options["secret"], where),
        algorithm=options["algorithm"],
        prefix=options["prefix"],
        encoding=options["encoding"],
    )


def _build_github(options: dict[str, Any], where: str) -> SignatureScheme:
    return HmacScheme(
        name="github",
        header="X-Hub-Signature-256",
        secret=_secret_bytes(options["secret"], where),
        prefix="sha256=",
        delivery_header="X-GitHub-Delivery",
        # GitHub also sends the legacy SHA-1 signature; it is a credential too.
        extra_headers=("X-Hub-Signature",),
    )


def _build_shopify(options: dict[str, Any], where: str) -> SignatureScheme:
    return HmacScheme(
        name="shopify",
        header="X-Shopify-Hmac-Sha256",
        secret=_secret_bytes(options["secret"], where),
        encoding="base64",
        # Shopify's duplicate-detection guide names X-Shopify-Event-Id (same across retries).
        delivery_header="X-Shopify-Event-Id",
    )


@dataclass(frozen=True)
class StripeScheme:
    """Stripe-Signature `t=<ts>,v1=<hex>[,v1=...]` over `{t}.{body}`, keyed by the whole whsec_."""

    secret: bytes = field(repr=False)
    tolerance: float = DEFAULT_TOLERANCE_SECONDS
    name: str = "stripe"
    header_names: tuple[str, ...] = ("Stripe-Signature",)

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> VerifiedRequest:
        value = _header(_lower_headers(headers), "Stripe-Signature")
        stamps: list[str] = []
        signatures: list[str] = []
        for item in value.split(","):
            key, sep, item_value = item.strip().partition("=")
            if key == "t" and sep:
                stamps.append(item_value)
            elif key == "v1" and sep:
                signatures.append(item_value)
            # v0 (test-mode legacy) and unknown future keys are not ours to check.
        if len(stamps) != 1 or not signatures:
            raise SignatureError(
                "malformed", "malformed Stripe-Signature header: expected t=<ts>,v1=<hex>"
            )
        timestamp = _timestamp(stamps[0], "Stripe-Signature timestamp")
        _check_fresh(timestamp, now, self.tolerance)
        candidates = [c for c in (_decode_hex(s, 32) for s in signatures) if c is not None]
        expected = _mac(self.secret, "sha256", stamps[0].encode(), b".", body)
        if not _any_matches(expected, candidates):
            raise _mismatch()
        return VerifiedRequest(self.name, None)


def _build_stripe(options: dict[str, Any], where: str) -> SignatureScheme:
    return StripeScheme(
        secret=_secret_bytes(options["secret"], where),
        tolerance=_tolerance(options["tolerance"], where),
    )


@dataclass(frozen=True)
class SlackScheme:
    """X-Slack-Signature `v0=<hex>` over `v0:{X-Slack-Request-Timestamp}:{body}`."""

    secret: bytes = field(repr=False)
    tolerance: float = DEFAULT_TOLERANCE_SECONDS
    name: str = "slack"
    header_names: tuple[str, ...] = ("X-Slack-Signature",)

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> VerifiedRequest:
        lowered = _lower_headers(headers)
        signature = _header(lowered, "X-Slack-Signature")
        stamp = _header(lowered, "X-Slack-Request-Timestamp")
        timestamp = _timestamp(stamp, "X-Slack-Request-Timestamp")
        given = _decode_hex(signature[3:], 32) if signature.startswith("v0=") else None
        if given is None:
            raise SignatureError(
                "malformed",
                "malformed X-Slack-Signature header: expected 'v0=' and 64 lower-case hex digits",
            )
        _check_fresh(timestamp, now, self.tolerance)
        expected = _mac(self.secret, "sha256", b"v0:", stamp.encode(), b":", body)
        if not hmac.compare_digest(expected, given):
            raise _mismatch()
        return VerifiedRequest(self.name, None)


def _build_slack(options: dict[str, Any], where: str) -> SignatureScheme:
    return SlackScheme(
        secret=_secret_bytes(options["secret"], where),
        tolerance=_tolerance(options["tolerance"], where),
    )


@dataclass(frozen=True)
class StandardWebhooksScheme:
    """Standard Webhooks: webhook-signature `v1,<base64> ...` over `{id}.{timestamp}.{body}`."""

    key: bytes = field(repr=False)
    tolerance: float = DEFAULT_TOLERANCE_SECONDS
    name: str = "standard-webhooks"
    header_names: tuple[str, ...] = ("webhook-signature",)

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> VerifiedRequest:
        lowered = _lower_headers(headers)
        message_id = _header(lowered, "webhook-id")
        stamp = _header(lowered, "webhook-timestamp")
        value = _header(lowered, "webhook-signature")
        timestamp = _timestamp(stamp, "webhook-timestamp")
        signatures = []
        for entry in value.split():
            version, _, encoded = entry.partition(",")
            # Other versions (v1a: asymmetric) are legitimately sent alongside; skip them.
            if version == "v1":
                signatures.append(encoded)
        if not signatures:
            raise SignatureError(
                "malformed", "malformed webhook-signature header: expected 'v1,<base64>'"
            )
        _check_fresh(timestamp, now, self.tolerance)
        candidates = [c for c in (_decode_base64(s, 32) for s in signatures) if c is not None]
        expected = _mac(self.key, "sha256", message_id.encode(), b".", stamp.encode(), b".", body)
        if not _any_matches(expected, candidates):
            raise _mismatch()
        return VerifiedRequest(self.name, message_id)


def _build_standard_webhooks(options: dict[str, Any], where: str) -> SignatureScheme:
    encoded = options["secret"].removeprefix("whsec_")
    try:
        # Secrets are often published without base64 padding; add what is missing.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise ConfigError(f"{where}.secret: expected 'whsec_' followed by base64")
    return StandardWebhooksScheme(key=key, tolerance=_tolerance(options["tolerance"], where))


_SECRET = Option(str, required=True)
_TOLERANCE = Option((int, float), default=DEFAULT_TOLERANCE_SECONDS)

register_scheme(
    "hmac",
    {
        "secret": _SECRET,
        "header": Option(str, required=True),
        "algorithm": Option(str, default="sha256", choices=tuple(_DIGESTS)),
        "prefix": Option(str, default=""),
        "encoding": Option(str, default="hex", choices=_ENCODINGS),
    },
    _build_hmac,
)
register_scheme("github", {"secret": _SECRET}, _build_github)
register_scheme("shopify", {"secret": _SECRET}, _build_shopify)
register_scheme("stripe", {"secret": _SECRET, "tolerance": _TOLERANCE}, _build_stripe)
register_scheme("slack", {"secret": _SECRET, "tolerance": _TOLERANCE}, _build_slack)
register_scheme(
    "standard-webhooks", {"secret": _SECRET, "tolerance": _TOLERANCE}, _build_standard_webhooks
)
