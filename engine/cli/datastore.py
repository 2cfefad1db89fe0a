"""`hookyard key set|get|list|delete`: the datastore (st2kv), straight on the store.

No server needed: the same config file (and HOOKYARD_* variables, among them
HOOKYARD_DATASTORE__ENCRYPTION_KEY) name the same store and key a running
`hookyard serve` uses, so a key set here is what rules read as st2kv.system.<name>.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from engine.cli.output import fail, print_json, print_table
from engine.config import load_settings
from engine.errors import EngineError
from engine.rules.enforce import RULE_USER
from engine.store import create_store
from engine.store.datastore import Datastore
from engine.support.logs import configure_logging

T = TypeVar("T")

_LIST_COLUMNS = ("name", "value", "secret", "encrypted", "scope", "user", "expire_timestamp")

_config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="HOOKYARD_CONFIG",
    help="Config file (default: ./config.yaml if present).",
)
_store_option = click.option("--store", "store_url", help="Store URL (overrides store.url).")
_scope_option = click.option(
    "--scope",
    type=click.Choice(["system", "user"]),
    default="system",
    show_default=True,
    help="st2kv.system (shared) or st2kv.user (one user's).",
)
_user_option = click.option(
    "--user", default=RULE_USER, show_default=True, help="Owner of a user-scoped key."
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _on_datastore(
    config_file: str | None, store_url: str | None, work: Callable[[Datastore], Awaitable[T]]
) -> T:
    async def run() -> T:
        settings = load_settings(config_file)
        if store_url:
            settings = settings.replace(**{"store.url": store_url})
        store = create_store(settings.store, settings.resolve_path("."))
        await store.open()
        try:
            return await work(Datastore(store, settings))
        finally:
            await store.close()

    # Warnings (a generated encryption key) reach stderr; progress lines do not.
    configure_logging("WARNING")
    try:
        return asyncio.run(run())
    except EngineError as exc:
        fail(str(exc))


def _show_one(shown: dict[str, Any], columns: tuple[str, ...], as_json: bool) -> None:
    if as_json:
        print_json(shown)
        return
    print_table(("property", "value"), [(c, _cell(shown.get(c))) for c in columns])


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


@click.group("key")
def key_group() -> None:
    """Set and read the datastore (st2kv.system.<name> in rules); secrets are encrypted."""


@key_group.command("set")
@click.argument("name")
@click.argument("value")
@click.option("--secret", is_flag=True, help="Encrypt the value at rest.")
@click.option("--ttl", type=click.IntRange(min=1), help="Seconds until the key expires.")
@_scope_option
@_user_option
@_json_option
@_config_option
@_store_option
def set_key(name, value, secret, ttl, scope, user, as_json, config_file, store_url) -> None:
    """Create or replace key NAME with VALUE."""

    async def work(datastore: Datastore) -> dict[str, Any]:
        stored = await datastore.set(name, value, scope=scope, user=user, secret=secret, ttl=ttl)
        return datastore.to_api(stored)

    shown = _on_datastore(config_file, store_url, work)
    _show_one(shown, ("name", "value", "secret", "scope", "user", "expire_timestamp"), as_json)


@key_group.command("get")
@click.argument("name")
@click.option("--decrypt", is_flag=True, help="Show a secret's plaintext.")
@_scope_option
@_user_option
@_json_option
@_config_option
@_store_option
def get_key(name, decrypt, scope, user, as_json, config_file, store_url) -> None:
    """Show key NAME (a secret shows its ciphertext unless --decrypt)."""

    async def work(datastore: Datastore) -> dict[str, Any]:
        pair = await datastore.get(name, scope=scope, user=user)
        return datastore.to_api(pair, decrypt=decrypt)

    _show_one(_on_datastore(config_file, store_url, work), _LIST_COLUMNS, as_json)


@key_group.command("list")
@click.option("--prefix", help="Only keys whose name starts with this.")
@click.option(
    "--scope",
    type=click.Choice(["all", "system", "user"]),
    default="all",
    show_default=True,
    help="Which scope to list.",
)
@click.option("--user", help="Only this user's keys in the user scope.")
@click.option("--decrypt", is_flag=True, help="Show secrets' plaintext.")
@_json_option
@_config_option
@_store_option
def list_keys(prefix, scope, user, decrypt, as_json, config_file, store_url) -> None:
    """List keys, ordered by scope, user and name."""

    async def work(datastore: Datastore) -> list[dict[str, Any]]:
        pairs = await datastore.list(prefix=prefix, scope=scope, user=user)
        return [datastore.to_api(pair, decrypt=decrypt) for pair in pairs]

    shown = _on_datastore(config_file, store_url, work)
    if as_json:
        print_json(shown)
        return
    print_table(_LIST_COLUMNS, [[_cell(item.get(c)) for c in _LIST_COLUMNS] for item in shown])


@key_group.command("delete")
@click.argument("name")
@_scope_option
@_user_option
@_config_option
@_store_option
def delete_key(name, scope, user, config_file, store_url) -> None:
    """Delete key NAME."""

    async def work(datastore: Datastore) -> bool:
        return await datastore.delete(name, scope=scope, user=user)

    if not _on_datastore(config_file, store_url, work):
        fail(f'datastore key "{name}" not found in scope st2kv.{scope}')
    click.echo(f'deleted datastore key "{name}" (st2kv.{scope})')
