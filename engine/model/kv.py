"""Key-value pairs of the datastore (StackStorm's `st2kv`): the record, scopes, validation.

Plain data, no I/O. A pair lives in one scope: `st2kv.system` (shared) or `st2kv.user`
(one per user name). A secret pair's `value` is the ciphertext (see engine.secrets.encryption):
the plaintext is never stored and only `| decrypt_kv` or `decrypt=true` reveal it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from engine.errors import EngineError
from engine.model.names import MAX_KEY_NAME_CHARS, too_long
from engine.model.records import isoformat, new_id

SYSTEM_SCOPE = "st2kv.system"
USER_SCOPE = "st2kv.user"
SCOPES = (SYSTEM_SCOPE, USER_SCOPE)
# What `st2 key list` sends to mean both scopes.
ALL_SCOPES = "all"

_SCOPE_NAMES = {
    "system": SYSTEM_SCOPE,
    "user": USER_SCOPE,
    SYSTEM_SCOPE: SYSTEM_SCOPE,
    USER_SCOPE: USER_SCOPE,
}
MAX_NAME_CHARS = MAX_KEY_NAME_CHARS
# A TTL longer than this is surely a unit mistake (milliseconds for seconds).
MAX_TTL_SECONDS = 100 * 365 * 24 * 3600


class DatastoreError(EngineError):
    """Raised when a datastore key, scope, value or TTL is invalid, or a secret cannot be
    encrypted or decrypted (no key, wrong key)."""


def parse_scope(scope: str | None, *, allow_all: bool = False) -> str | None:
    """The full scope name for `system`, `user`, `st2kv.system`, `st2kv.user` (default
    system); with allow_all, `all` (and nothing) mean both scopes and return None."""
    if scope is None or scope == "":
        return None if allow_all else SYSTEM_SCOPE
    if allow_all and scope == ALL_SCOPES:
        return None
    try:
        return _SCOPE_NAMES[scope]
    except KeyError:
        known = "system, user" + (", all" if allow_all else "")
        raise DatastoreError(f"unknown datastore scope {scope!r}; use one of: {known}") from None


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise DatastoreError("a datastore key needs a non-empty name")
    if len(name) > MAX_NAME_CHARS:
        raise DatastoreError(f"datastore key name {too_long(len(name), MAX_NAME_CHARS)}")
    if any(ord(char) < 32 or char in "/\x7f" for char in name):
        raise DatastoreError(
            f"datastore key name {name!r} contains a control character or '/'; "
            "use letters, digits and . _ - :"
        )
    return name


def check_owner(scope: str, user: str | None) -> str | None:
    """The user a pair belongs to: none in the system scope, required in the user scope."""
    if scope == SYSTEM_SCOPE:
        return None
    if not isinstance(user, str) or not user:
        raise DatastoreError("a key in the user scope needs a user name")
    return user


def check_ttl(ttl: Any) -> int | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 < ttl <= MAX_TTL_SECONDS:
        raise DatastoreError(f"ttl must be a whole number of seconds above 0, got {ttl!r}")
    return ttl


@dataclass(frozen=True)
class KeyValuePair:
    name: str
    # The plaintext, or for a secret the ciphertext (engine.secrets.encryption token).
    value: str
    scope: str = SYSTEM_SCOPE
    user: str | None = None
    secret: bool = False
    expire_timestamp: datetime | None = None
    id: str = field(default_factory=new_id)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def new(
        cls,
        name: str,
        value: str,
        *,
        scope: str = SYSTEM_SCOPE,
        user: str | None = None,
        secret: bool = False,
        ttl: int | None = None,
        now: datetime,
    ) -> KeyValuePair:
        """A checked pair to store; `value` must already be the ciphertext if secret."""
        if not isinstance(value, str):
            raise DatastoreError(
                f"datastore value of {name!r} must be a string (JSON-encode structured data)"
            )
        if "\x00" in value:
            # PostgreSQL text cannot hold NUL: refused alike on both stores.
            raise DatastoreError(f"datastore value of {name!r} contains a NUL character")
        scope = parse_scope(scope) or SYSTEM_SCOPE
        ttl = check_ttl(ttl)
        return cls(
            name=check_name(name),
            value=value,
            scope=scope,
            user=check_owner(scope, user),
            secret=bool(secret),
            expire_timestamp=None if ttl is None else now + timedelta(seconds=ttl),
            created_at=now,
            updated_at=now,
        )

    def with_value(self, value: str) -> KeyValuePair:
        return dataclasses.replace(self, value=value)

    @property
    def uid(self) -> str:
        owner = f"{self.user}:" if self.user else ""
        return f"key_value_pair:{self.scope}:{owner}{self.name}"

    def to_api(self, *, plaintext: str | None = None) -> dict[str, Any]:
        """StackStorm's KeyValuePairAPI shape. A secret shows its ciphertext with
        `encrypted: true` unless `plaintext` (the decrypted value) is given."""
        revealed = self.secret and plaintext is not None
        return {
            "id": self.id,
            "uid": self.uid,
            "name": self.name,
            "value": plaintext if revealed else self.value,
            "secret": self.secret,
            "encrypted": self.secret and not revealed,
            "scope": self.scope,
            "user": self.user,
            "expire_timestamp": isoformat(self.expire_timestamp),
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
        }
