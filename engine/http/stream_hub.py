"""One process's reader of the change feed, shared by its event-stream clients.

The hub reads new feed entries (engine.store.ops.stream) when the store hints at them
(LISTEN/NOTIFY on PostgreSQL, this process's own writes on SQLite) or every
stream.poll_interval, shapes each one into StackStorm's events once, and keeps the last
stream.client_queue of them in a ring. A client is only a position in that ring: memory
does not grow with clients or with how far behind one is. A client that falls out of the
ring is dropped (engine.http.stream_api sends it a final event naming where to resume).

The hub reads only while a client is connected; a client resuming from an entry older
than the ring reads the difference from the store itself (`catch_up`).

PostgreSQL numbers entries at insert, and transactions commit in any order: entry 8 can
be visible before entry 7. The hub passes on entries up to the first missing number and
waits GAP_WAIT_SECONDS for it; then it counts the number as rolled back and moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.config import StreamSettings
from engine.errors import StoreError
from engine.model.stream import FeedEntry
from engine.store.base import Store

log = logging.getLogger(__name__)

GAP_WAIT_SECONDS = 2.0
READ_BATCH = 500
TRIM_SECONDS = 30.0


@dataclass(frozen=True)
class StreamEvent:
    """One SSE event, shaped once and shared by every client that wants it."""

    index: int  # position in the hub's sequence of events
    seq: int  # the feed entry it came from (the SSE id: resume after it)
    name: str
    execution_id: str | None
    action_ref: str | None
    status: str | None
    data: str  # JSON
    # The SSE text of the event, encoded once for every client: `id:` names its entry, so a
    # client resuming after it skips the entry's other event (an execution's liveaction
    # twin) only if it dropped between the two.
    frame: bytes


Shaper = Callable[[FeedEntry], Sequence[tuple[str, dict[str, Any]]]]


def make_events(entry: FeedEntry, shape: Shaper, first_index: int) -> list[StreamEvent]:
    shaped = shape(entry)
    events = []
    for offset, (name, body) in enumerate(shaped):
        action = body.get("action")
        data = json.dumps(body, default=str)
        events.append(
            StreamEvent(
                index=first_index + offset,
                seq=entry.seq,
                name=name,
                execution_id=body.get("execution_id")
                or (entry.object_id if entry.execution else None),
                action_ref=body.get("action_ref")
                or (action.get("ref") if isinstance(action, dict) else action),
                status=body.get("status") if entry.execution else None,
                data=data,
                frame=f"id: {entry.seq}\nevent: {name}\ndata: {data}\n\n".encode(),
            )
        )
    return events


class StreamHub:
    def __init__(self, store: Store, settings: StreamSettings, shape: Shaper) -> None:
        self._store = store
        self._settings = settings
        self._shape = shape
        self._ring: deque[StreamEvent] = deque(maxlen=max(1, settings.client_queue))
        self._next_index = 0  # index the next event gets
        self._cursor = 0  # the last feed seq read
        self._gap_since: float | None = None
        self._changed = asyncio.Event()
        self._has_clients = asyncio.Event()
        self.clients = 0
        self._started = False  # the cursor was set from the feed's head
        self._task: asyncio.Task | None = None
        self._stopping = False

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stream hub")

    async def stop(self) -> None:
        # A flag as well as the cancel: Python 3.11's wait_for can swallow a cancellation
        # that lands as its wait ends, and the loop must end all the same.
        self._stopping = True
        self._has_clients.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._changed.set()  # waiting clients look again, and find the hub gone

    # --- what clients use ------------------------------------------------------------------

    @property
    def first_index(self) -> int:
        return self._ring[0].index if self._ring else self._next_index

    @property
    def end_index(self) -> int:
        return self._next_index

    @property
    def oldest_seq(self) -> int | None:
        return self._ring[0].seq if self._ring else None

    @property
    def cursor(self) -> int:
        return self._cursor

    def event_at(self, index: int) -> StreamEvent:
        return self._ring[index - self.first_index]

    def index_after_seq(self, seq: int) -> int:
        """The index of the first ring event whose seq is greater than `seq`."""
        for event in self._ring:
            if event.seq > seq:
                return event.index
        return self._next_index

    async def connect(self) -> None:
        """Count a client in; the first one starts the reading (from the feed's head)."""
        if self.clients >= self._settings.max_clients:
            raise OverflowError
        self.clients += 1
        if not self._started:
            try:
                head = await self._store.feed_head()
                # What the ring holds ends where reading stopped: not a run up to the head.
                self._ring.clear()
                self._cursor = head
            except BaseException:
                self.clients -= 1
                raise
            self._started = True
        self._has_clients.set()

    def disconnect(self) -> None:
        self.clients -= 1
        if self.clients == 0:
            self._has_clients.clear()

    async def wait_changed(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def catch_up(self, after: int, until: int) -> AsyncIterator[StreamEvent]:
        """Events of the feed entries after `after` up to `until`, read from the store
        (for a client resuming from before the ring)."""
        index = -1  # not ring positions: the caller only writes them
        while after < until:
            entries = await self._store.read_feed(after, READ_BATCH)
            entries = [e for e in entries if e.seq <= until]
            if not entries:
                return
            for entry in entries:
                for event in make_events(entry, self._shape, index):
                    yield event
            after = entries[-1].seq

    # --- reading the feed ----------------------------------------------------------------

    async def _run(self) -> None:
        trimmed_at = time.monotonic()
        while not self._stopping:
            if time.monotonic() - trimmed_at > TRIM_SECONDS:
                trimmed_at = time.monotonic()
                await self._trim()
            if not self._has_clients.is_set():
                self._started = False  # nobody reads: the next client starts at the head
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._has_clients.wait(), TRIM_SECONDS)
                continue
            try:
                more = await self._read_once()
            except StoreError as exc:
                log.warning("reading the change feed failed: %s", exc)
                more = False
            if not more:
                waited = time.monotonic()
                await self._store.wait_for_work("stream", self._settings.poll_interval)
                if time.monotonic() - waited < self._settings.poll_interval:
                    # Woken by a hint: let a few more changes land, so that each client
                    # gets one write per batch rather than one per change.
                    await asyncio.sleep(self._settings.batch_seconds)

    async def _trim(self) -> None:
        try:
            await self._store.trim_feed(self._settings.keep_events)
        except StoreError as exc:
            log.warning("trimming the change feed failed: %s", exc)

    async def _read_once(self) -> bool:
        """Read and publish one batch; True when there may be more right away."""
        if not self._started:
            return False
        entries = await self._store.read_feed(self._cursor, READ_BATCH)
        usable = self._up_to_gap(entries)
        if not usable:
            return False
        published = []
        for entry in usable:
            try:
                events = make_events(entry, self._shape, self._next_index)
            except Exception:  # one entry that cannot be shaped must not stop the stream
                log.exception("shaping feed entry %s (%s) failed", entry.seq, entry.name)
                events = []
            self._next_index += len(events)
            published.extend(events)
        self._ring.extend(published)
        self._cursor = usable[-1].seq
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return len(entries) == READ_BATCH

    def _up_to_gap(self, entries: list[FeedEntry]) -> list[FeedEntry]:
        expected = self._cursor + 1
        for position, entry in enumerate(entries):
            if entry.seq != expected:
                now = time.monotonic()
                if self._gap_since is None:
                    self._gap_since = now
                if now - self._gap_since < GAP_WAIT_SECONDS:
                    return entries[:position]
                # Waited long enough: a rolled-back transaction's number, skipped.
                log.debug("feed numbers %d..%d skipped", expected, entry.seq - 1)
            self._gap_since = None
            expected = entry.seq + 1
        return entries
