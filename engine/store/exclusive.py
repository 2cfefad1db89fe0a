"""A name only one process holds at a time, across every process on the same store, and
released by the operating system or the database when its holder dies: what makes each
sensor run once (engine.workers.sensors).

PostgreSQL: a session advisory lock on a connection of its own (the server drops it when
the connection or the process goes). SQLite: an flock on a file beside the database (the
kernel drops it when the process goes).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
from typing import Any

from engine.errors import StoreUnavailable
from engine.store.base import Store


class Exclusive:
    """Held until `release()` (or the holder's death)."""

    def __init__(self, release: Any) -> None:
        self._release = release

    async def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            await release()


def _key(name: str) -> int:
    # A signed 64-bit key for pg_try_advisory_lock, stable across processes.
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


async def try_exclusive(store: Store, name: str) -> Exclusive | None:
    """The lock on `name` if no other process holds it, else None."""
    url = getattr(store, "url", None)
    if isinstance(url, str) and url.startswith(("postgresql://", "postgres://")):
        return await _try_pg(url, name)
    path = getattr(store, "path", None)
    if isinstance(path, Path):
        return _try_file(path, name)
    raise StoreUnavailable(f"{store.where}: no exclusive locks on this store")


async def _try_pg(url: str, name: str) -> Exclusive | None:
    import asyncpg  # the store backend's driver: SQLite processes never load it

    try:
        conn = await asyncpg.connect(url, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise StoreUnavailable(f"cannot connect for a lock: {exc}") from None
    try:
        taken = await conn.fetchval("SELECT pg_try_advisory_lock($1)", _key(name))
    except BaseException:
        await conn.close()
        raise
    if not taken:
        await conn.close()
        return None

    async def release() -> None:
        with contextlib.suppress(Exception):
            await conn.close()  # the session ends, the lock goes with it

    return Exclusive(release)


def _try_file(database: Path, name: str) -> Exclusive | None:
    folder = database.parent / f"{database.name}.locks"
    folder.mkdir(exist_ok=True)
    digest = hashlib.sha256(name.encode()).hexdigest()[:32]
    fd = os.open(folder / f"{digest}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None

    async def release() -> None:
        os.close(fd)  # closing the descriptor drops the flock

    return Exclusive(release)
