"""API keys: generation, hashing, durations and the record the store keeps (pure core).

A key is ``hy_`` + 8 characters (the greppable prefix, stored in the clear so a key can
be found and named) + 40 random characters. The store keeps only the SHA-256 of the
whole key; the key itself is shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from engine.errors import EngineError
from engine.model.names import MAX_NAME_CHARS, MAX_REF_CHARS, too_long
from engine.model.records import new_id, utcnow
from engine.model.roles import ADMIN, DEFAULT_ROLE, Grants, RoleError, check_role
from engine.support.durations import rate_per_second

KEY_MARK = "hy_"
PREFIX_LENGTH = len(KEY_MARK) + 8
SECRET_LENGTH = 40
_ALPHABET = string.ascii_letters + string.digits
# What a key looks like; the log filter scrubs anything of this shape.
KEY_PATTERN = re.compile(r"hy_[A-Za-z0-9]{8}[A-Za-z0-9]{8,}")

INTERVALS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}
_SUFFIXES = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_DURATION = re.compile(r"([0-9]+)\s*([smhd])")


class ApiKeyError(EngineError):
    """Raised when an API key request is invalid (bad name, scope or duration)."""


@dataclass(frozen=True)
class ApiKey:
    """An API key as stored: everything but the key itself."""

    id: str
    name: str
    prefix: str
    key_hash: str = field(repr=False)
    # What it may do (engine.model.roles); an operator runs what its grants cover.
    role: str = DEFAULT_ROLE
    grants: Grants = field(default_factory=Grants)
    # An unscoped non-admin key made an observer when roles arrived (no role chosen yet).
    role_migrated: bool = False
    # Hooks it may post to and trigger types (or rule refs) it may fire; empty = all.
    webhooks: tuple[str, ...] = ()
    triggers: tuple[str, ...] = ()
    created_at: datetime = field(default_factory=utcnow)
    expires_at: datetime | None = None
    enabled: bool = True
    # Requests per second this key may make (webhooks and API alike; 0: no limit), with
    # bursts of up to `rate_burst` (0: one second's worth). engine.http.rate_limits.
    rate_limit: float = 0.0
    rate_burst: float = 0.0

    @property
    def admin(self) -> bool:
        return self.role == ADMIN

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def matches(self, presented: str) -> bool:
        """Whether `presented` is this key (constant-time over the hashes)."""
        return hmac.compare_digest(hash_key(presented), self.key_hash)

    def to_api(self) -> dict[str, Any]:
        """The shape the API and CLI show: never the key, never its hash."""
        return {
            "id": self.id,
            "name": self.name,
            "key_prefix": self.prefix,
            "role": self.role,
            "grants": self.grants.to_api(),
            "admin": self.admin,
            "webhooks": list(self.webhooks),
            "triggers": list(self.triggers),
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "enabled": self.enabled,
            "rate_limit": (
                {"rate": self.rate_limit, "burst": self.rate_burst or max(1.0, self.rate_limit)}
                if self.rate_limit
                else None
            ),
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def generate_key() -> str:
    body = "".join(secrets.choice(_ALPHABET) for _ in range(8 + SECRET_LENGTH))
    return KEY_MARK + body


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def key_prefix(presented: str) -> str | None:
    """The prefix to look a presented key up by, or None if it cannot be one of ours."""
    if not presented.startswith(KEY_MARK) or len(presented) <= PREFIX_LENGTH:
        return None
    return presented[:PREFIX_LENGTH]


def new_api_key(
    name: str,
    *,
    role: str | None = None,
    grants: Grants | None = None,
    admin: bool = False,
    webhooks: tuple[str, ...] | list[str] = (),
    triggers: tuple[str, ...] | list[str] = (),
    lifetime: timedelta | None = None,
    now: datetime | None = None,
    rate_limit: float = 0.0,
    rate_burst: float = 0.0,
) -> tuple[ApiKey, str]:
    """A new key record and the key to show once. Without a role: `webhook` when limited
    to webhooks or triggers, `operator` with grants, else `observer`; `admin=True` is
    `role="admin"`."""
    if not isinstance(name, str) or not name.strip():
        raise ApiKeyError("an API key needs a non-empty name")
    if len(name.strip()) > MAX_NAME_CHARS:
        raise ApiKeyError(f"'name' {too_long(len(name.strip()), MAX_NAME_CHARS)}")
    webhooks = _names(webhooks, "webhooks", MAX_NAME_CHARS)
    triggers = _names(triggers, "triggers", MAX_REF_CHARS)
    grants = grants or Grants()
    if admin:
        if role not in (None, ADMIN):
            raise ApiKeyError(f"admin=true contradicts role {role!r}")
        role = ADMIN
    try:
        role = check_role(role, grants=grants, scoped=bool(webhooks or triggers), name=name.strip())
    except RoleError as exc:
        raise ApiKeyError(str(exc)) from None
    now = now or utcnow()
    key = generate_key()
    record = ApiKey(
        id=new_id(),
        name=name.strip(),
        prefix=key[:PREFIX_LENGTH],
        key_hash=hash_key(key),
        role=role,
        grants=grants,
        webhooks=tuple(w.strip("/") for w in webhooks),
        triggers=triggers,
        created_at=now,
        rate_limit=rate_limit,
        rate_burst=rate_burst,
        expires_at=None if lifetime is None else now + lifetime,
    )
    return record, key


def _names(values: Any, what: str, limit: int) -> tuple[str, ...]:
    if values is None:
        return ()
    if not isinstance(values, list | tuple) or not all(
        isinstance(v, str) and v.strip() for v in values
    ):
        raise ApiKeyError(f"{what!r} must be a list of non-empty strings")
    for value in values:
        if len(value) > limit:
            raise ApiKeyError(f"an item of {what!r} {too_long(len(value), limit)}")
    return tuple(values)


def lifetime_from_api(value: Any, what: str = "expiration") -> timedelta:
    """``{"count": 60, "interval": "seconds|minutes|hours|days"}`` as a duration."""
    if not isinstance(value, Mapping):
        raise ApiKeyError(f'{what} must be {{"count": <number>, "interval": "days"}}')
    unknown = sorted(set(value) - {"count", "interval"})
    if unknown:
        raise ApiKeyError(f"{what}.{unknown[0]}: unknown field; expected count and interval")
    count = value.get("count")
    interval = value.get("interval")
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise ApiKeyError(f"{what}.count must be a positive whole number")
    if interval not in INTERVALS:
        raise ApiKeyError(f"{what}.interval must be one of: {', '.join(INTERVALS)}")
    return timedelta(seconds=count * INTERVALS[interval])


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s`` (or combined, ``1d12h``) as a duration."""
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact.replace(" ", ""):
        raise ApiKeyError(f"bad duration {text!r}: use a number and s, m, h or d, e.g. 30d")
    seconds = sum(int(n) * INTERVALS[_SUFFIXES[u]] for n, u in parts)
    if seconds <= 0:
        raise ApiKeyError(f"bad duration {text!r}: must be longer than zero")
    return timedelta(seconds=seconds)


def extended_expiry(current: datetime | None, by: timedelta, now: datetime) -> datetime | None:
    """The new expiry when extending by `by`: from now if already expired; never stays never."""
    if current is None:
        return None
    return max(current, now) + by


def rate_from_api(value: Any) -> tuple[float, float]:
    """(requests per second, burst) from `"100/s"`, `{"rate": "100/s", "burst": 200}` or
    None (no limit: (0, 0))."""
    if value is None:
        return 0.0, 0.0
    options = value if isinstance(value, Mapping) else {"rate": value}
    unknown = sorted(set(options) - {"rate", "burst"})
    if unknown:
        raise ApiKeyError(f"rate_limit.{unknown[0]}: unknown field; expected rate and burst")
    try:
        rate = rate_per_second(options.get("rate"))
    except ValueError as exc:
        raise ApiKeyError(f"rate_limit.rate: {exc}") from None
    burst = options.get("burst", 0)
    if isinstance(burst, bool) or not isinstance(burst, int | float) or burst < 0:
        raise ApiKeyError("rate_limit.burst must be a number of requests (0: one second's worth)")
    return rate, float(burst)
