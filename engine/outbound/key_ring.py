"""The engine's RSA key ring for `rsa-sha256` outbound signatures, published as a JWKS.

Receivers verify without a shared secret: they fetch `/.well-known/jwks.json`, pick the key
whose `kid` matches the `...-Key-Id` header and check the RS256 signature. A key id is the
RFC 7638 JWK thumbprint (SHA-256, base64url), so anyone can recompute it from the public key.

On disk (`load_or_create`) the directory holds one PKCS#8 PEM per key (encrypted with the
passphrase when one is given, mode 0600) and `keyring.json`, an index of key ids with their
creation and retirement times. A retired key's public half stays in the JWKS for
`grace_seconds`, so receivers that cached the old key set keep verifying while they refresh.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from engine.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: one process per key directory is assumed there.
    fcntl = None  # type: ignore[assignment]

INDEX_FILE = "keyring.json"
LOCK_FILE = ".keyring.lock"
DEFAULT_KEY_SIZE = 3072
_INDEX_FORMAT = 1
_KID = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256 digest


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_jwk_members(public_key: rsa.RSAPublicKey) -> dict[str, str]:
    numbers = public_key.public_numbers()
    return {"kty": "RSA", "n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e)}


def jwk_thumbprint(public_key: rsa.RSAPublicKey) -> str:
    """RFC 7638: SHA-256 over the required members, sorted, without whitespace."""
    members = public_jwk_members(public_key)
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


@dataclass
class _Key:
    kid: str
    private_key: rsa.RSAPrivateKey
    created_at: float
    retired_at: float | None = None

    def published_until(self, grace_seconds: float) -> float:
        return float("inf") if self.retired_at is None else self.retired_at + grace_seconds


class KeyRing:
    """RSA signing keys: one current, plus retired ones still published for a grace period."""

    def __init__(
        self,
        keys: list[_Key],
        *,
        grace_seconds: float,
        directory: Path | None = None,
        passphrase: bytes | None = None,
        key_size: int = DEFAULT_KEY_SIZE,
    ) -> None:
        # Exactly one key has retired_at None once construction is over (_sync ensures it).
        self._keys = keys
        self._grace_seconds = grace_seconds
        self._directory = directory
        self._passphrase = passphrase
        self._key_size = key_size

    # --- construction ------------------------------------------------------

    @classmethod
    def load_or_create(
        cls,
        directory: Path,
        *,
        passphrase: bytes | None,
        grace_seconds: float,
        now: float | None = None,
        key_size: int = DEFAULT_KEY_SIZE,
    ) -> KeyRing:
        """Load the key ring kept in `directory`, generating the first key when there is none."""
        now = time.time() if now is None else now
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        ring = cls(
            [],  # filled by _sync right below, under the directory lock
            grace_seconds=grace_seconds,
            directory=directory,
            passphrase=passphrase,
            key_size=key_size,
        )
        with ring._locked():
            ring._sync(now, rotate=False)
        return ring

    @classmethod
    def from_pem(
        cls, pem: bytes, passphrase: bytes | None = None, *, grace_seconds: float = 0.0
    ) -> KeyRing:
        """A key ring of one configured private key; rotate by configuring another PEM."""
        private_key = _load_private_key(pem, passphrase, source="the configured signing key PEM")
        kid = jwk_thumbprint(private_key.public_key())
        return cls([_Key(kid, private_key, time.time())], grace_seconds=grace_seconds)

    # --- use ---------------------------------------------------------------

    @property
    def current_kid(self) -> str:
        return self._current().kid

    def sign(self, data: bytes) -> tuple[str, bytes]:
        """RSASSA-PKCS1-v1_5 with SHA-256 (JWS "RS256") over `data`, with the current key."""
        key = self._current()
        return key.kid, key.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def jwks(self, now: float | None = None) -> dict[str, Any]:
        """The JSON Web Key Set to publish: the current key first, then keys still in grace."""
        now = time.time() if now is None else now
        published = [key for key in self._keys if key.published_until(self._grace_seconds) > now]
        published.sort(key=lambda key: (key.retired_at is not None, -(key.retired_at or 0)))
        return {
            "keys": [
                {
                    **public_jwk_members(key.private_key.public_key()),
                    "kid": key.kid,
                    "use": "sig",
                    "alg": "RS256",
                }
                for key in published
            ]
        }

    def rotate(self, now: float | None = None) -> str:
        """Make a new current key; the old one stays published for `grace_seconds`."""
        if self._directory is None:
            raise ConfigError(
                "the signing key comes from a configured PEM; rotate it by configuring a new "
                "PEM, or let Hookyard manage keys in a key directory"
            )
        now = time.time() if now is None else now
        with self._locked():
            self._sync(now, rotate=True)
        return self.current_kid

    def reload(self, now: float | None = None) -> None:
        """Pick up a rotation another process made in the same key directory."""
        if self._directory is None:
            return
        now = time.time() if now is None else now
        with self._locked():
            self._sync(now, rotate=False)

    # --- internals ---------------------------------------------------------

    def _current(self) -> _Key:
        return next(key for key in self._keys if key.retired_at is None)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Several `hookyard serve` processes may share one key directory; without the lock
        # two first starts would each generate a "current" key.
        assert self._directory is not None
        if fcntl is None:
            yield
            return
        fd = os.open(self._directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _sync(self, now: float, *, rotate: bool) -> None:
        """Read the index, drop keys past their grace, rotate or create, write back."""
        assert self._directory is not None
        entries = self._read_index()
        keys: list[_Key] = []
        for entry in entries:
            retired_at = entry.get("retired_at")
            if not isinstance(entry.get("kid"), str) or not _KID.fullmatch(entry["kid"]):
                raise ConfigError(f"{self._directory / INDEX_FILE}: bad kid {entry.get('kid')!r}")
            # The file name is derived from the id, never read from the index: a tampered
            # index cannot point outside the key directory.
            path = self._directory / f"{entry['kid']}.pem"
            if retired_at is not None and retired_at + self._grace_seconds <= now:
                path.unlink(missing_ok=True)  # no longer published, no longer needed
                continue
            try:
                pem = path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"{path}: cannot read an indexed key ({exc})") from None
            private_key = _load_private_key(pem, self._passphrase, source=str(path))
            if jwk_thumbprint(private_key.public_key()) != entry["kid"]:
                raise ConfigError(f"{path}: key does not match its index id {entry['kid']!r}")
            keys.append(_Key(entry["kid"], private_key, entry["created_at"], retired_at))
        current = [key for key in keys if key.retired_at is None]
        if len(current) > 1:
            raise ConfigError(f"{self._directory / INDEX_FILE}: more than one current key")
        if rotate and current:
            current[0].retired_at = now
        if rotate or not current:
            keys.append(self._create_key(now))
        self._keys = keys
        self._write_index()

    def _create_key(self, now: float) -> _Key:
        assert self._directory is not None
        private_key = _generate(self._key_size)
        kid = jwk_thumbprint(private_key.public_key())
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(self._passphrase)
            if self._passphrase
            else serialization.NoEncryption()
        )
        pem = private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        _write_private(self._directory / f"{kid}.pem", pem)
        return _Key(kid, private_key, now)

    def _read_index(self) -> list[dict[str, Any]]:
        assert self._directory is not None
        path = self._directory / INDEX_FILE
        if not path.exists():
            return []
        try:
            index = json.loads(path.read_text())
            if index.get("format") != _INDEX_FORMAT:
                raise ValueError(f"unsupported format {index.get('format')!r}")
            return list(index["keys"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{path}: unreadable key index ({exc})") from None

    def _write_index(self) -> None:
        assert self._directory is not None
        index = {
            "format": _INDEX_FORMAT,
            "keys": [
                {
                    "kid": key.kid,
                    "created_at": key.created_at,
                    "retired_at": key.retired_at,
                }
                for key in self._keys
            ],
        }
        # Write-then-rename: a crash leaves either the old or the new index, never half.
        temporary = self._directory / f"{INDEX_FILE}.tmp"
        temporary.write_text(json.dumps(index, indent=2) + "\n")
        os.replace(temporary, self._directory / INDEX_FILE)


def _generate(key_size: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=key_size)


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start: no window in which the key is readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _load_private_key(pem: bytes, passphrase: bytes | None, *, source: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase or None)
    except TypeError as exc:
        # cryptography says "Password was not given but private key is encrypted" or the reverse.
        raise ConfigError(f"{source}: {exc}; check the signing key passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(
            f"{source}: cannot load the private key (wrong passphrase or not a PEM private key)"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"{source}: rsa-sha256 signing needs an RSA private key")
    return key
