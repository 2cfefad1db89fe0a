"""The store: `create_store(settings, base_dir)` picks the implementation by URL scheme."""

from __future__ import annotations

from pathlib import Path

from engine.config import StoreSettings
from engine.errors import ConfigError
from engine.store.base import Store
from engine.store.codec import UnstorableValue, redact_url

ACCEPTED_URL_FORMS = (
    "sqlite:///relative/path.db (relative to the config folder)",
    "sqlite:////absolute/path.db",
    "postgresql://user:password@host:port/database (or postgres://...)",
)


def create_store(settings: StoreSettings, base_dir: Path) -> Store:
    """The store named by `settings.url`; not opened yet (call `await store.open()`)."""
    url = settings.url
    if url.startswith("sqlite:///"):
        from engine.store.sqlite import SqliteStore

        location = url[len("sqlite:///") :]
        if not location or location.startswith(":memory:"):
            raise _bad_url(url, "name a database file")
        path = Path(location)
        if not path.is_absolute():
            path = Path(base_dir) / path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"store.url {url!r}: cannot create the folder {path.parent}: {exc.strerror}"
            ) from exc
        return SqliteStore(path, settings)
    if url.startswith(("postgresql://", "postgres://")):
        from engine.store.postgres import PostgresStore

        return PostgresStore(url, settings)
    raise _bad_url(url, "unknown scheme")


def _bad_url(url: str, problem: str) -> ConfigError:
    return ConfigError(
        f"store.url {redact_url(url)!r}: {problem}; accepted forms: {'; '.join(ACCEPTED_URL_FORMS)}"
    )


__all__ = ["ACCEPTED_URL_FORMS", "Store", "UnstorableValue", "create_store"]
