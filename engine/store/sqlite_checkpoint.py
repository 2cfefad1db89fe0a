"""WAL checkpoints for the SQLite store, run beside the writer instead of inside a commit.

SQLite's automatic checkpoint runs in whichever COMMIT pushes the WAL past its threshold,
on the writer thread, and includes two fsyncs: every few hundred batches one group commit
(and every webhook waiting on it) paid for copying the whole WAL into the database. Here
the writer's threshold is raised to a safety net (`WRITER_AUTOCHECKPOINT_PAGES`, used only
if these checkpoints stop) and a PASSIVE checkpoint runs on its own thread and connection
every `interval` seconds after a write. PASSIVE never blocks the writer or readers; frames
a reader still needs are left for the next round. When the WAL has grown past
`RESTART_AFTER_FRAMES` anyway (a steady stream of writes, which PASSIVE never catches up
with), a RESTART checkpoint briefly holds writers off so that the WAL starts over.

Durability is unchanged: a commit is durable once in the WAL (synchronous=NORMAL), which
the checkpoint only copies from.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

# ~40 MB of 4 KiB pages: large enough never to fire while checkpoints keep up.
WRITER_AUTOCHECKPOINT_PAGES = 10_000
# The WAL is only rewound to its start by a write that finds every frame of it copied
# into the database, and under a steady stream of commits a PASSIVE checkpoint never
# catches up: the WAL grew by tens of MB a second (1 GB after 30 s of webhooks), and
# every page read walks more of its index. Past this many frames (~16 MB) a RESTART
# checkpoint holds writers off for the few milliseconds the last frames take.
RESTART_AFTER_FRAMES = 4_096
# Bytes of WAL file kept after it is rewound (the rest is truncated).
WAL_SIZE_LIMIT = 64 * 1024 * 1024


class WalCheckpointer:
    def __init__(
        self, connect: Callable[[], sqlite3.Connection], name: str, interval: float = 0.25
    ) -> None:
        self._connect = connect
        self._name = name
        self._interval = interval
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._wrote = False
        self.checkpoints = 0
        # RESTART checkpoints made (tests read it).
        self.restarts = 0

    def start(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="hookyard-sqlite-checkpoint")
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    def wrote(self) -> None:
        """A transaction committed: checkpoint at the next round."""
        self._wrote = True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._thread is not None:
            thread, self._thread = self._thread, None
            await asyncio.get_running_loop().run_in_executor(thread, self._close)
            thread.shutdown(wait=False)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._interval)
            if not self._wrote or self._thread is None:
                continue
            self._wrote = False
            await loop.run_in_executor(self._thread, self._checkpoint)

    def _checkpoint(self) -> None:
        try:
            if self._conn is None:
                self._conn = self._connect()
            _, wal_frames, _ = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if wal_frames > RESTART_AFTER_FRAMES:
                # A checkpoint that holds writers off until it is done, so the next write
                # starts the WAL from its beginning again (and journal_size_limit trims it).
                self._conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                self.restarts += 1
            self.checkpoints += 1
        except sqlite3.Error as exc:
            # The writer's own automatic checkpoint still bounds the WAL meanwhile.
            log.warning("%s: WAL checkpoint failed: %s", self._name, exc)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
