"""`hookyard serve`: run the configured roles in one asyncio loop until SIGTERM/SIGINT.

On a signal: readiness turns false, the listener stops taking connections, in-flight
requests finish (up to server.shutdown_grace), workers finish their current item and
release the leases of claimed-but-unstarted work, the store flushes; exit 0.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import logging
import signal

from aiohttp import web

from engine.config import Settings
from engine.http.app import create_app
from engine.http.context import RUNTIME
from engine.http.header_timeout import HeaderTimeoutRunner
from engine.http.operations_api import reload_app, watch_app

log = logging.getLogger(__name__)


async def serve(
    settings: Settings, ready: asyncio.Event | None = None, *, watch: bool = False
) -> None:
    """Serve until SIGTERM/SIGINT; SIGHUP reloads rules, packs and webhook definitions;
    `watch` also reloads when one of their files changes."""
    # A fatal signal leaves the stacks in the log (stderr) rather than nothing: SQLite's
    # -shm is memory-mapped, and one made immutable under a running server is a SIGBUS at
    # the next write (a file unwritable at start is refused by the store's open instead).
    faulthandler.enable()
    app = create_app(settings)
    runner = HeaderTimeoutRunner(
        app,
        header_timeout=settings.server.header_timeout,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=settings.server.shutdown_grace,
    )
    await runner.setup()
    site = web.TCPSite(
        runner, settings.server.host, settings.server.port, backlog=2048, reuse_address=True
    )
    try:
        await site.start()
    except OSError:
        # The store and the roles started with the app: stop them (releasing claims)
        # before the CLI reports the busy port.
        await runner.cleanup()
        raise
    log.info(
        "hookyard serving roles %s on http://%s:%d (store %s)",
        ",".join(settings.roles),
        settings.server.host,
        settings.server.port,
        _redact(settings.store.url),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = _start_reloading(app, loop, stop, watch)
    # Everything loaded at start (rules, packs, templates, libraries) lives as long as the
    # process: moved out of the collector's reach, so the full collections that request
    # garbage triggers no longer walk it again and again. (Reference cycles among those
    # start-up objects that a reload later drops are not collected: a one-off, bounded.)
    gc.collect()
    gc.freeze()
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("shutting down: draining requests and workers")
        app[RUNTIME].draining = True
        if watcher is not None:
            await watcher
        await runner.cleanup()
        log.info("stopped")


def _start_reloading(
    app: web.Application, loop: asyncio.AbstractEventLoop, stop: asyncio.Event, watch: bool
) -> asyncio.Task | None:
    """SIGHUP reloads; with `watch`, a task polls the rule and pack files for changes."""

    def on_sighup() -> None:
        log.info("SIGHUP: reloading rules, packs and webhook definitions")
        try:
            reload_app(app)
        except Exception:  # a reload bug must not kill the server
            log.exception("reload failed; the previous rules stay in service")

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    if not watch:
        return None
    return asyncio.create_task(watch_app(app, stop), name="hookyard-watch")


def _redact(url: str) -> str:
    """A store URL without its password, for logs."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
