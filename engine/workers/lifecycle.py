"""The roles' lifecycle: started together with the aiohttp app, stopped together with it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from aiohttp import web

from engine.errors import StoreError
from engine.process.runtime import Runtime
from engine.workers.actions import run_actions_worker
from engine.workers.claimers import CLAIMING_ROLES, Claimer
from engine.workers.deliveries import run_deliveries_worker
from engine.workers.retention import run_retention_worker
from engine.workers.rules import run_rules_worker
from engine.workers.sensors import run_sensors_worker
from engine.workers.step_pool import close_pool_of, pool_of
from engine.workers.timers import run_timers_worker
from engine.workers.workflows import run_workflows_worker

log = logging.getLogger(__name__)

RoleMain = Callable[[Runtime, asyncio.Event], Awaitable[None]]


def role_mains() -> dict[str, RoleMain]:
    """The background roles by name (api is the HTTP listener itself)."""
    return {
        "rules": run_rules_worker,
        "actions": run_actions_worker,
        "timers": run_timers_worker,
        "deliveries": run_deliveries_worker,
        "workflows": run_workflows_worker,
        "sensors": run_sensors_worker,
        "retention": run_retention_worker,
    }


def role_contexts(
    roles: Sequence[str], runtime: Runtime
) -> list[Callable[[web.Application], AsyncIterator[None]]]:
    """One cleanup context that runs the background roles among `roles` together.

    On shutdown every role is told to stop at once and all of them share one grace
    period: no role keeps claiming new work while another drains, and SIGTERM takes at
    most `server.shutdown_grace`, not that much per role.
    """
    mains = role_mains()
    wanted = [(name, mains[name]) for name in roles if name in mains]
    return [_roles_context(wanted, runtime)] if wanted else []


def _roles_context(roles: list[tuple[str, RoleMain]], runtime: Runtime):
    async def background_roles(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks = {}
        # Registered before any role claims: a process starting after this one sees it
        # alive and leaves its leases alone (engine.workers.claimers).
        claimer = Claimer(runtime.store) if CLAIMING_ROLES & {n for n, _ in roles} else None
        if claimer is not None:
            try:
                await claimer.start()
            except StoreError as exc:  # leases still expire: slower, not wrong
                log.warning("could not take over dead processes' work at start: %s", exc)
        if {"actions", "workflows"} & {name for name, _ in roles}:
            await pool_of(runtime).start()  # workflow steps run in these child processes
        for name, main in roles:
            tasks[name] = asyncio.create_task(main(runtime, stop), name=f"hookyard-{name}")
            runtime.tasks[name] = tasks[name]
        try:
            yield
        finally:
            stop.set()
            await _stop_roles(tasks, runtime.settings.server.shutdown_grace)
            await close_pool_of(runtime)
            if claimer is not None:
                try:
                    await claimer.stop()
                except Exception as exc:  # a dead row is removed by the next start-up
                    log.warning("could not unregister this process's claims: %s", exc)

    return background_roles


async def _stop_roles(tasks: dict[str, asyncio.Task], grace: float) -> None:
    """Let the roles finish their current work within `grace` seconds, then cancel them."""
    running = {task for task in tasks.values() if not task.done()}
    if running:
        _, late = await asyncio.wait(running, timeout=grace)
        for task in late:
            log.warning("role %s did not stop within %.0f s; cancelling", task.get_name(), grace)
            task.cancel()
        if late:
            await asyncio.wait(late)
    for name, task in tasks.items():
        if task.cancelled():
            continue
        if task.exception() is not None:
            log.error("role %s failed: %r", name, task.exception(), exc_info=task.exception())
