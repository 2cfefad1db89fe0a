"""Encryption of secret datastore values at rest: Fernet (AES-128-CBC + HMAC-SHA256).

The key comes from `datastore.encryption_key` (env HOOKYARD_DATASTORE__ENCRYPTION_KEY):
one Fernet key, or several separated by commas to rotate (the first encrypts, every one
decrypts). When it is unset, the first secret written generates a key into
`datastore.key_file` (mode 0600, created exclusively so processes racing to create it
end up with one key) and a warning says so: keep that file, or secrets cannot be read
back. Processes on several machines (PostgreSQL) must all be given the same key.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from engine.config import Settings
from engine.errors import ConfigError
from engine.model.kv import DatastoreError
from engine.support.logs import register_secrets

log = logging.getLogger(__name__)

KEY_SETTING = "datastore.encryption_key"
KEY_ENV = "HOOKYARD_DATASTORE__ENCRYPTION_KEY"


class DatastoreCipher:
    """Encrypts and decrypts datastore values with one or more Fernet keys."""

    def __init__(self, keys: list[bytes], origin: str) -> None:
        self.origin = origin
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise DatastoreError(
                f"cannot decrypt a secret datastore value with the key from {self.origin}: "
                "it was encrypted with another key or is not a ciphertext of this datastore"
            ) from None


def load_cipher(settings: Settings, *, create: bool) -> DatastoreCipher | None:
    """The cipher from the setting, else from the key file; with `create`, a missing key
    file is generated. None when there is no key and `create` is false."""
    configured = settings.datastore.encryption_key.strip()
    if configured:
        keys = [part.strip() for part in configured.split(",") if part.strip()]
        return _cipher(keys, f"{KEY_SETTING} ({KEY_ENV})")
    path = settings.resolve_path(settings.datastore.key_file)
    text = _read_key_file(path)
    if text is None:
        if not create:
            return None
        text = _create_key_file(path)
    return _cipher([line.strip() for line in text.splitlines() if line.strip()], str(path))


def _cipher(keys: list[str], origin: str) -> DatastoreCipher:
    if not keys:
        raise ConfigError(f"{origin}: no encryption key in it")
    try:
        cipher = DatastoreCipher([key.encode("ascii") for key in keys], origin)
    except (ValueError, UnicodeError):
        # The message never repeats the key.
        raise ConfigError(
            f"{origin}: not a Fernet key (32 url-safe base64-encoded bytes); make one with "
            "python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'"
        ) from None
    register_secrets(*keys)
    return cipher


def _read_key_file(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="ascii")
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"datastore key file {path}: cannot read it: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "datastore key file %s can be read by other users; chmod 600 it",
            path,
            extra={"path": str(path)},
        )
    return text


def _create_key_file(path: Path) -> str:
    key = Fernet.generate_key().decode("ascii")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(key + "\n")
        # link() publishes the complete file or fails if one exists: a process racing to
        # create it never reads a half-written key, and all end up with the same key.
        os.link(temporary, path)
    except FileExistsError:
        text = _read_key_file(path)
        if text is None:  # pragma: no cover - removed between the two calls
            raise ConfigError(f"datastore key file {path} vanished while being created") from None
        return text
    except OSError as exc:
        raise ConfigError(f"datastore key file {path}: cannot create it: {exc.strerror}") from exc
    finally:
        temporary.unlink(missing_ok=True)
    log.warning(
        "no %s set: generated a datastore encryption key into %s (mode 0600); back it up, "
        "secrets cannot be decrypted without it. Processes on other machines need the same "
        "key: set %s to its content",
        KEY_SETTING,
        path,
        KEY_ENV,
        extra={"path": str(path)},
    )
    return key + "\n"


def require_cipher(settings: Settings) -> DatastoreCipher:
    """The cipher for reading secrets; DatastoreError when no key exists anywhere."""
    cipher = load_cipher(settings, create=False)
    if cipher is None:
        raise DatastoreError(
            f"no datastore encryption key: set {KEY_SETTING} ({KEY_ENV}) or restore the key "
            f"file {settings.resolve_path(settings.datastore.key_file)}"
        )
    return cipher
