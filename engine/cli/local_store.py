"""Where `hookyard key` and `hookyard apikey` act: on a server, or straight on a store.

With `--url` (or HOOKYARD_URL) they go through that server's /api/v1 with
HOOKYARD_API_KEY, so they change the store that server really uses. Without it they
open the store the config file names (or `--store`) themselves — no server needed — and
say on stderr which store that is: a `hookyard serve --store X` elsewhere would not see
the change, and a silent write into the wrong database is worse than one line of noise.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from engine.cli.client import API_KEY_VARIABLE, ApiClient, ClientError
from engine.cli.output import fail
from engine.config import Settings, load_settings
from engine.errors import EngineError
from engine.store import Store, create_store
from engine.store.codec import redact_url
from engine.support.logs import configure_logging

T = TypeVar("T")


def target_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """`--url`, `--config` and `--store` on a command that works either way."""
    for option in reversed(
        (
            click.option(
                "--url",
                envvar="HOOKYARD_URL",
                help="Act through this Hookyard server's API (also HOOKYARD_URL; the API "
                "key comes from HOOKYARD_API_KEY). Without it: straight on the store.",
            ),
            click.option(
                "--config",
                "config_file",
                type=click.Path(dir_okay=False),
                envvar="HOOKYARD_CONFIG",
                help="Config file naming the store (default: ./config.yaml if present).",
            ),
            click.option("--store", "store_url", help="Store URL (overrides store.url)."),
        )
    ):
        function = option(function)
    return function


def api_client(url: str, config_file: str | None, store_url: str | None) -> ApiClient:
    """The client for `--url`. A `--store` beside it would be ignored silently: refused.
    A config file (often HOOKYARD_CONFIG in the environment) names no server: unused."""
    if store_url:
        fail("give --url (act through a server) or --store (act on a store), not both")
    return ApiClient(url, os.environ.get(API_KEY_VARIABLE))


def run_on_store(
    config_file: str | None,
    store_url: str | None,
    work: Callable[[Store, Settings], Awaitable[T]],
    *,
    failures: tuple[type[Exception], ...] = (),
) -> T:
    """Open the named store, run `work(store, settings)`, close it, say which store on
    stderr.

    An EngineError (or one of `failures`) is one line on stderr and exit 1.
    """

    async def run() -> T:
        settings = load_settings(config_file)
        if store_url:
            settings = settings.replace(**{"store.url": store_url})
        store = create_store(settings.store, settings.resolve_path("."))
        await store.open()
        try:
            result = await work(store, settings)
        finally:
            await store.close()
        # After the work, so that an error stays the one line on stderr.
        click.echo(f"store: {describe_store(settings.store.url, store)}", err=True)
        return result

    # Warnings (a generated encryption key) reach stderr; progress lines do not.
    configure_logging("WARNING")
    try:
        return asyncio.run(run())
    except (EngineError, *failures) as exc:
        fail(str(exc))


def run_on_server(work: Callable[[], T]) -> T:
    try:
        return work()
    except ClientError as exc:
        fail(str(exc))


def describe_store(url: str, store: Store) -> str:
    """The store as a reader can find it: a SQLite file by its absolute path, a
    PostgreSQL URL without its password."""
    path = getattr(store, "path", None)
    if path is not None:
        return f"sqlite:///{os.path.abspath(path)}"
    return redact_url(url)
