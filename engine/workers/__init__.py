"""Background roles of a Hookyard process (their lifecycle: engine.workers.lifecycle)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable


async def sleep_until(stop: asyncio.Event, waiter: Awaitable[None]) -> None:
    """Wait for `waiter` (a wake-up hint or a poll timeout) unless `stop` is set first."""
    stop_wait = asyncio.ensure_future(stop.wait())
    work_wait = asyncio.ensure_future(waiter)
    try:
        await asyncio.wait({stop_wait, work_wait}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in (stop_wait, work_wait):
            if not future.done():
                future.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await future
