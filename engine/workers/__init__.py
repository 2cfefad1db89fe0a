"""Background roles of a Hookyard process, started and stopped with the aiohttp app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from aiohttp import web

log = logging.getLogger(__name__)

RoleMain = Callable[["Runtime", asyncio.Event], Awaitable[None]]  # noqa: F821


def role_contexts(roles: Sequence[str]) -> list[Callable[[web.Application], AsyncIterator[None]]]:
    from engine.workers.actions import run_actions_worker
    from engine.workers.rules import run_rules_worker

    mains: dict[str, RoleMain] = {"rules": run_rules_worker, "actions": run_actions_worker}
    from engine.workers.timers import run_timers_worker

    mains["timers"] = run_timers_worker
    from engine.workers.deliveries import run_deliveries_worker

    mains["deliveries"] = run_deliveries_worker
    return [_context(name, mains[name]) for name in roles if name in mains]


def _context(name: str, main: RoleMain):
    async def context(app: web.Application) -> AsyncIterator[None]:
        from engine.http.app import RUNTIME

        runtime = app[RUNTIME]
        stop = asyncio.Event()
        task = asyncio.create_task(main(runtime, stop), name=f"hookyard-{name}")
        runtime.tasks[name] = task
        try:
            yield
        finally:
            stop.set()
            await _stop_role(name, task, runtime.settings.server.shutdown_grace)

    context.__name__ = f"{name}_role"
    return context


async def _stop_role(name: str, task: asyncio.Task, grace: float) -> None:
    """Let the role finish its current work within `grace` seconds, then cancel it."""
    if task.done():
        if not task.cancelled() and task.exception() is not None:
            log.error("role %s had died: %r", name, task.exception())
        return
    try:
        await asyncio.wait_for(asyncio.shield(task), grace)
    except TimeoutError:
        log.warning("role %s did not stop within %.0f s; cancelling", name, grace)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    except Exception:
        log.exception("role %s failed", name)


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
