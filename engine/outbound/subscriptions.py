"""Subscriptions to the engine's events: the record, and checks of what the API is given.

Pure: the URL's SSRF check needs DNS and happens in the API (engine.outbound.ssrf); here
are the shapes, the event filter, custom headers and the signing configuration. A
subscription signs with its newest secret plus any older one still within its grace
period (Standard Webhooks lists one signature per secret during a rotation).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from engine.errors import ConfigError
from engine.model.records import isoformat, new_id, utcnow
from engine.outbound import signing
from engine.outbound.events import check_event_types

GLOBAL_SUBSCRIPTION_ID = "global"
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Set by the sender itself; a custom header may not replace them.
_RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "transfer-encoding"})
_RESERVED_PREFIXES = ("webhook-", "x-hookyard-")
_CREATE_FIELDS = frozenset(
    {"url", "customHeaders", "events", "secret", "description", "signing", "enabled", "rateLimit"}
)
_PATCH_FIELDS = frozenset(
    {"url", "customHeaders", "events", "description", "enabled", "signing", "rateLimit", "circuit"}
)
# Circuit states shown by the API (engine.outbound.breaker decides them).
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
# Custom headers whose names say they carry a credential are shown masked by the API (the
# stored value is sent on delivery); a PATCH giving the mask back keeps the stored value.
HEADER_MASK = "********"
_SECRET_HEADER_WORDS = (
    "auth", "token", "key", "secret", "passw", "cookie", "session", "credential", "signature"
)  # fmt: skip


class SubscriptionError(ConfigError):
    """Raised when a subscription body is invalid; the API answers 400 with the message."""


@dataclass(frozen=True)
class Secret:
    value: str
    # None: the current secret; else it stops signing at this time (rotated out).
    expires_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "expires_at": isoformat(self.expires_at)}


@dataclass(frozen=True)
class Subscription:
    id: str
    url: str
    custom_headers: dict[str, str]
    events: tuple[str, ...]
    secrets: tuple[Secret, ...]
    description: str = ""
    enabled: bool = True
    signing_scheme: str = signing.DEFAULT_SCHEME
    signing_options: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)
    # When deliveries started failing without a success since (None: not failing).
    failing_since: datetime | None = None
    disabled_reason: str | None = None
    # The circuit breaker (engine.outbound.breaker): failed attempts in a row, and while
    # the circuit is tripped, until when no delivery is sent (None: closed).
    consecutive_failures: int = 0
    circuit_open_until: datetime | None = None
    # Deliveries per second sent to this endpoint at most, per process (0: no limit).
    rate_limit: float = 0.0

    def circuit_state(self, now: datetime) -> str:
        if self.circuit_open_until is None:
            return CLOSED
        return OPEN if self.circuit_open_until > now else HALF_OPEN

    def signing_secrets(self, now: datetime) -> list[str]:
        """Secrets to sign with now, newest first."""
        return [s.value for s in self.secrets if s.expires_at is None or s.expires_at > now]

    def to_api(self, *, secret: str | None = None) -> dict[str, Any]:
        shown = {
            "id": self.id,
            "url": self.url,
            "customHeaders": masked_headers(self.custom_headers),
            "events": list(self.events),
            "description": self.description,
            "enabled": self.enabled,
            "signing": {"scheme": self.signing_scheme, "options": self.signing_options},
            "createdAt": isoformat(self.created_at),
            "failingSince": isoformat(self.failing_since),
            "disabledReason": self.disabled_reason,
            "circuit": {
                "state": self.circuit_state(utcnow()),
                "consecutiveFailures": self.consecutive_failures,
                "openUntil": isoformat(self.circuit_open_until),
            },
            "rateLimit": self.rate_limit,
        }
        if secret is not None:
            shown["secret"] = secret  # only in the answers that create it
        return shown


def new_subscription(body: Any) -> tuple[Subscription, str]:
    """A subscription from a POST body, and its secret (generated when absent)."""
    data = _object(body)
    _no_unknown(data, _CREATE_FIELDS)
    if "url" not in data:
        raise SubscriptionError("'url' is required")
    secret = data.get("secret")
    if secret is None:
        secret = signing.generate_secret()
    elif not isinstance(secret, str) or not secret:
        raise SubscriptionError("'secret' must be non-empty text (or left out to generate one)")
    scheme, options = _signing(data.get("signing"))
    _check_signing(scheme, options, secret)
    subscription = Subscription(
        id=new_id(),
        url=_url(data["url"]),
        custom_headers=_headers(data.get("customHeaders")),
        events=_events(data.get("events")),
        secrets=(Secret(secret),),
        description=_description(data.get("description")),
        enabled=_enabled(data.get("enabled", True)),
        signing_scheme=scheme,
        signing_options=options,
        created_at=utcnow(),
        rate_limit=_rate_limit(data.get("rateLimit", 0)),
    )
    return subscription, secret


def changes(body: Any, current: Subscription) -> dict[str, Any]:
    """The fields a PATCH body changes, checked, as store column values."""
    data = _object(body)
    _no_unknown(data, _PATCH_FIELDS)
    changed: dict[str, Any] = {}
    if "url" in data:
        changed["url"] = _url(data["url"])
    if "customHeaders" in data:
        changed["custom_headers"] = _unmasked(_headers(data["customHeaders"]), current)
    if "events" in data:
        changed["events"] = _events(data["events"])
    if "description" in data:
        changed["description"] = _description(data["description"])
    if "enabled" in data:
        changed["enabled"] = _enabled(data["enabled"])
        if changed["enabled"]:
            # Re-enabled by hand: the failure streak that disabled it is forgiven.
            changed["failing_since"] = None
            changed["disabled_reason"] = None
    if "signing" in data:
        scheme, options = _signing(data["signing"])
        _check_signing(scheme, options, current.secrets[0].value)
        changed["signing_scheme"] = scheme
        changed["signing_options"] = options
    if "rateLimit" in data:
        changed["rate_limit"] = _rate_limit(data["rateLimit"])
    if "circuit" in data:
        if data["circuit"] != CLOSED:
            raise SubscriptionError(
                f"'circuit' can only be set to {CLOSED!r} (close a tripped circuit by hand)"
            )
        changed["consecutive_failures"] = 0
        changed["circuit_open_until"] = None
    return changed


def _rate_limit(value: Any) -> float:
    # At least 0.1/s: a send waiting longer for its turn would outlive its claim's lease.
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not (value == 0 or 0.1 <= value <= 10_000):
        raise SubscriptionError(
            "'rateLimit' must be deliveries per second from 0.1 to 10000, or 0 for no limit"
        )
    return float(value)


def rotated_secrets(
    current: Subscription, new_secret: str | None, grace_seconds: float, now: datetime
) -> tuple[tuple[Secret, ...], str]:
    """The secrets after a rotation (new first, old ones expiring) and the new secret."""
    secret = new_secret if new_secret is not None else signing.generate_secret()
    if not isinstance(secret, str) or not secret:
        raise SubscriptionError("'secret' must be non-empty text (or left out to generate one)")
    _check_signing(current.signing_scheme, current.signing_options, secret)
    ends = now + timedelta(seconds=grace_seconds)
    kept = [
        Secret(s.value, min(s.expires_at or ends, ends))
        for s in current.secrets
        if s.expires_at is None or s.expires_at > now
    ]
    return (Secret(secret), *kept), secret


def is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_HEADER_WORDS)


def masked_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        name: HEADER_MASK if is_secret_header(name) else value for name, value in headers.items()
    }


def _unmasked(headers: dict[str, str], current: Subscription) -> dict[str, str]:
    """`headers` with each masked secret header replaced by its stored value (a client
    that read the subscription and sends its headers back must not store the mask)."""
    stored = {name.lower(): value for name, value in current.custom_headers.items()}
    return {
        name: stored[name.lower()]
        if value == HEADER_MASK and is_secret_header(name) and name.lower() in stored
        else value
        for name, value in headers.items()
    }


# --- field checks ---------------------------------------------------------------------


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise SubscriptionError("the body must be a JSON object")
    return body


def _no_unknown(data: Mapping[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise SubscriptionError(
            f"unknown field {unknown[0]!r}; known fields: {', '.join(sorted(known))}"
        )


def _url(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SubscriptionError("'url' must be an http:// or https:// URL")
    return value.strip()


def _headers(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SubscriptionError("'customHeaders' must be an object of header name to text")
    headers: dict[str, str] = {}
    for name, text in value.items():
        lowered = name.lower()
        if not _HEADER_NAME.fullmatch(name):
            raise SubscriptionError(f"customHeaders: {name!r} is not an HTTP header name")
        if lowered in _RESERVED_HEADERS or lowered.startswith(_RESERVED_PREFIXES):
            raise SubscriptionError(
                f"customHeaders: {name!r} is set by Hookyard itself (body type and signature)"
            )
        if not isinstance(text, str) or "\r" in text or "\n" in text:
            raise SubscriptionError(f"customHeaders: {name!r} must be one line of text")
        headers[name] = text
    return headers


def _events(value: Any) -> tuple[str, ...]:
    try:
        return check_event_types(value, "'events'")
    except ConfigError as exc:
        raise SubscriptionError(str(exc)) from None


def _description(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SubscriptionError("'description' must be text")
    return value


def _enabled(value: Any) -> bool:
    if not isinstance(value, bool):
        raise SubscriptionError("'enabled' must be true or false")
    return value


def _signing(value: Any) -> tuple[str, dict[str, Any]]:
    if value is None:
        return signing.DEFAULT_SCHEME, {}
    if not isinstance(value, dict):
        raise SubscriptionError('\'signing\' must be an object: {"scheme": ..., "options": {}}')
    _no_unknown(value, frozenset({"scheme", "options"}))
    scheme = value.get("scheme", signing.DEFAULT_SCHEME)
    options = value.get("options") or {}
    if not isinstance(scheme, str) or not isinstance(options, dict):
        raise SubscriptionError("signing: 'scheme' must be text and 'options' an object")
    return scheme, dict(options)


def _check_signing(scheme: str, options: dict[str, Any], secret: str) -> None:
    try:
        signing.validate(scheme, options=options, secrets=[secret])
    except ConfigError as exc:
        raise SubscriptionError(f"signing: {exc}") from None
