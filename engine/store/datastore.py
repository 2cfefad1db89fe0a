"""The datastore service: st2kv pairs on the store, secrets encrypted, a view for templates.

The API (engine.http.datastore_api), the CLI (engine.cli.datastore) and the workers go through it.
Workers read `st2kv(user)`: every live pair loaded at once and reused for
`datastore.cache_seconds` (a write through this object drops the copy at once), so a
template never waits on the store and every instance of a batch sees the same data.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from engine.config import Settings
from engine.errors import EngineError
from engine.model.kv import (
    SYSTEM_SCOPE,
    USER_SCOPE,
    KeyValuePair,
    check_owner,
    parse_scope,
)
from engine.model.records import utcnow
from engine.rules.kvlookup import KeyScope, KvSnapshot, st2kv_from_snapshot
from engine.secrets.encryption import DatastoreCipher, load_cipher, require_cipher
from engine.store.base import Store


class Datastore:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._cipher: DatastoreCipher | None = None
        self._pairs: list[KeyValuePair] | None = None
        self._loaded_at = 0.0
        self._views: dict[str, dict[str, KeyScope]] = {}
        self._snapshots: dict[str, KvSnapshot] = {}
        self._lock = asyncio.Lock()

    # --- reading and writing ---------------------------------------------------------

    async def set(
        self,
        name: str,
        value: Any,
        *,
        scope: str | None = None,
        user: str | None = None,
        secret: bool = False,
        encrypted: bool = False,
        ttl: int | None = None,
    ) -> KeyValuePair:
        """Store a pair. A secret is encrypted here; `encrypted` says `value` already is a
        ciphertext of this datastore (as StackStorm's `--encrypted`), checked by
        decrypting it."""
        full_scope = parse_scope(scope) or SYSTEM_SCOPE
        pair = KeyValuePair.new(
            name,
            value,
            scope=full_scope,
            user=user,
            secret=secret or encrypted,
            ttl=ttl,
            now=utcnow(),
        )
        if encrypted:
            self._reading_cipher().decrypt(pair.value)
        elif pair.secret:
            pair = pair.with_value(self._writing_cipher().encrypt(pair.value))
        stored = await self.store.put_kv(pair)
        self.invalidate()
        return stored

    async def get(
        self, name: str, *, scope: str | None = None, user: str | None = None
    ) -> KeyValuePair:
        full_scope = parse_scope(scope) or SYSTEM_SCOPE
        return await self.store.get_kv(name, full_scope, check_owner(full_scope, user))

    async def list(
        self, *, prefix: str | None = None, scope: str | None = None, user: str | None = None
    ) -> list[KeyValuePair]:
        """`scope` system, user or all (None); `user` narrows the user scope to one user."""
        full_scope = parse_scope(scope, allow_all=True)
        return await self.store.list_kv(prefix or None, full_scope, user or None)

    async def delete(self, name: str, *, scope: str | None = None, user: str | None = None) -> bool:
        full_scope = parse_scope(scope) or SYSTEM_SCOPE
        deleted = await self.store.delete_kv(name, full_scope, check_owner(full_scope, user))
        self.invalidate()
        return deleted

    def reveal(self, pair: KeyValuePair) -> str:
        """The plaintext of a pair (decrypting a secret; DatastoreError without the key)."""
        return self._reading_cipher().decrypt(pair.value) if pair.secret else pair.value

    def decrypt(self, ciphertext: str) -> str:
        """The plaintext of a secret value (DatastoreError without the key)."""
        return self._reading_cipher().decrypt(ciphertext)

    def to_api(self, pair: KeyValuePair, *, decrypt: bool = False) -> dict[str, Any]:
        return pair.to_api(plaintext=self.reveal(pair) if decrypt and pair.secret else None)

    # --- the view templates get ---------------------------------------------------------

    async def st2kv(self, user: str) -> dict[str, KeyScope]:
        """`st2kv` for templates rendered on behalf of `user`: the system scope and that
        user's keys; secrets as SecretValue ciphertext that only `| decrypt_kv` opens."""
        async with self._lock:
            self._forget_if_stale()
            if self._pairs is None:
                await self._load()
            view = self._views.get(user)
            if view is None:
                snapshot = self._snapshot(user)
                reveal = self._template_reveal() if _has_secrets(snapshot) else _no_secrets
                view = self._views[user] = st2kv_from_snapshot(snapshot, reveal)
            return view

    async def st2kv_snapshot(self, user: str) -> KvSnapshot:
        """`st2kv` for `user` as plain data, for the evaluator process (which decrypts
        with its own key); the same object for as long as the loaded copy is reused."""
        async with self._lock:
            self._forget_if_stale()
            if self._pairs is None:
                await self._load()
            snapshot = self._snapshots.get(user)
            if snapshot is None:
                snapshot = self._snapshots[user] = self._snapshot(user)
            return snapshot

    def invalidate(self) -> None:
        """Forget the loaded copy: the next st2kv() reads the store again."""
        self._pairs = None
        self._views = {}
        self._snapshots = {}

    def _forget_if_stale(self) -> None:
        if time.monotonic() - self._loaded_at >= self.settings.datastore.cache_seconds:
            self.invalidate()

    async def _load(self) -> None:
        self._pairs = await self.store.list_kv()
        self._loaded_at = time.monotonic()
        self._views = {}
        self._snapshots = {}

    def _snapshot(self, user: str) -> KvSnapshot:
        now = utcnow()
        live = [
            p for p in self._pairs or () if p.expire_timestamp is None or p.expire_timestamp > now
        ]
        return (
            tuple((p.name, p.value, p.secret) for p in live if p.scope == SYSTEM_SCOPE),
            tuple(
                (p.name, p.value, p.secret)
                for p in live
                if p.scope == USER_SCOPE and p.user == user
            ),
        )

    def _template_reveal(self):
        # The key is read here, before rendering, so decrypt_kv itself never does I/O; a
        # missing key becomes the error of the template that asks to decrypt.
        try:
            return self._reading_cipher().decrypt
        except EngineError as exc:
            problem = exc

            def unavailable(ciphertext: str) -> str:
                raise problem

            return unavailable

    # --- the cipher ------------------------------------------------------------------

    def _reading_cipher(self) -> DatastoreCipher:
        if self._cipher is None:
            self._cipher = require_cipher(self.settings)
        return self._cipher

    def _writing_cipher(self) -> DatastoreCipher:
        if self._cipher is None:
            self._cipher = load_cipher(self.settings, create=True)
        assert self._cipher is not None  # create=True always yields one
        return self._cipher


def _has_secrets(snapshot: KvSnapshot) -> bool:
    return any(secret for scope in snapshot for _, _, secret in scope)


def _no_secrets(ciphertext: str) -> str:  # pragma: no cover - no SecretValue uses it
    raise AssertionError("no secret in this view")
