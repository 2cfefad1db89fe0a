"""A name only one process holds at a time, across every process on the same store, and
released by the operating system or the database when its holder dies: what makes each
sensor run once (engine.workers.sensors).

PostgreSQL: a session advisory lock on a connection of its own (the server drops it when
the connection or the process goes). SQLite: an flock on a file beside the database (the
kernel drops it when the process goes).

A PostgreSQL lock can be lost while its holder lives: the server ends the session (a
restart, `pg_terminate_backend`, an idle or network timeout) and another process takes
the lock. `Exclusive.lost(every)` watches for that (the connection closing, or a
periodic look at pg_locks through it failing or not finding the lock) and returns why,
so that the holder stops what the lock guarded before it runs twice. A file lock cannot
be lost: its `lost` never returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from engine.errors import StoreUnavailable
from engine.store.base import Store

# The lock held by this session: a bigint key is (classid, objid) = (high, low) 32 bits,
# objsubid 1 (PostgreSQL's pg_locks documentation).
_HELD = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
    " AND pid = pg_backend_pid() AND granted AND objsubid = 1"
    " AND classid = $1::bigint::oid AND objid = $2::bigint::oid)"
)

# problem(timeout) -> why the lock is not held any more, or None while it is.
Check = Callable[[float], Awaitable[str | None]]


class Exclusive:
    """Held until `release()` (or the holder's death, or — PostgreSQL — its session's)."""

    def __init__(
        self, release: Any, check: Check | None = None, closed: asyncio.Event | None = None
    ) -> None:
        self._release = release
        self._check = check
        # Set when the lock's connection closes (the server ended the session): noticed
        # at once rather than at the next check.
        self._closed = closed

    async def problem(self, timeout: float = 5.0) -> str | None:
        """Why the lock is not held any more, or None (looked at now)."""
        if self._release is None:
            return "it was released"
        return None if self._check is None else await self._check(timeout)

    async def lost(self, every: float) -> str:
        """Return why, once the lock is found lost (looked at every `every` seconds);
        never for a lock only the holder's death can drop."""
        if self._check is None:
            await asyncio.Event().wait()  # cancelled by the caller
        closed = self._closed or asyncio.Event()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closed.wait(), every)
            why = await self.problem(max(every, 1.0))
            if why is not None:
                return why

    async def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            await release()


def advisory_key(name: str) -> int:
    """The signed 64-bit key of `name`'s PostgreSQL advisory lock, stable across
    processes (tests find the lock's session by it)."""
    return _key(name)


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
    closed = asyncio.Event()
    conn.add_termination_listener(lambda _: closed.set())
    unsigned = _key(name) & 0xFFFF_FFFF_FFFF_FFFF
    classid, objid = unsigned >> 32, unsigned & 0xFFFF_FFFF

    async def check(timeout: float) -> str | None:
        if conn.is_closed():
            return "its database connection closed"
        try:
            held = await asyncio.wait_for(conn.fetchval(_HELD, classid, objid), timeout)
        except TimeoutError:
            return f"its database connection did not answer within {timeout:g} s"
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return f"its database connection failed: {type(exc).__name__}: {exc}"
        return None if held else "the database no longer holds it"

    async def release() -> None:
        try:  # the session ends, the lock goes with it
            await asyncio.wait_for(conn.close(), 5)
        except Exception:
            conn.terminate()  # a connection that does not answer: dropped all the same

    return Exclusive(release, check, closed)


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
