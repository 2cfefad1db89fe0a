"""`hookyard key set|get|list|delete`: the datastore (st2kv), on a server or a store.

With `--url`/HOOKYARD_URL through the server's /api/v1/keys. Without it straight on the
store: the same config file (and HOOKYARD_* variables, among them
HOOKYARD_DATASTORE__ENCRYPTION_KEY) name the same store and key a running
`hookyard serve` uses, so a key set here is what rules read as st2kv.system.<name>; the
store is named on stderr (engine.cli.local_store).
"""

from __future__ import annotations

from typing import Any

import click

from engine.cli.client import path_part
from engine.cli.local_store import api_client, run_on_server, run_on_store, target_options
from engine.cli.output import print_json, print_table
from engine.errors import NotFound
from engine.rules.enforce import RULE_USER
from engine.store.datastore import Datastore

_LIST_COLUMNS = ("name", "value", "secret", "encrypted", "scope", "user", "expire_timestamp")

_scope_option = click.option(
    "--scope",
    type=click.Choice(["system", "user"]),
    default="system",
    show_default=True,
    help="st2kv.system (shared) or st2kv.user (one user's).",
)
_user_option = click.option(
    "--user",
    help=f"Owner of a user-scoped key (default: {RULE_USER} on a store, the API key's "
    "user through a server).",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


class KeysOnStore:
    """The datastore opened from the config file or --store, one store per call."""

    def __init__(self, config_file: str | None, store_url: str | None) -> None:
        self._config_file = config_file
        self._store_url = store_url

    def _run(self, work):
        async def on_datastore(store, settings):
            return await work(Datastore(store, settings))

        return run_on_store(self._config_file, self._store_url, on_datastore)

    def set(self, name, value, *, scope, user, secret, ttl) -> dict[str, Any]:
        async def work(datastore: Datastore):
            stored = await datastore.set(
                name, value, scope=scope, user=user or RULE_USER, secret=secret, ttl=ttl
            )
            return datastore.to_api(stored)

        return self._run(work)

    def get(self, name, *, scope, user, decrypt) -> dict[str, Any]:
        async def work(datastore: Datastore):
            pair = await datastore.get(name, scope=scope, user=user or RULE_USER)
            return datastore.to_api(pair, decrypt=decrypt)

        return self._run(work)

    def list(self, *, prefix, scope, user, decrypt) -> list[dict[str, Any]]:
        async def work(datastore: Datastore):
            pairs = await datastore.list(prefix=prefix, scope=scope, user=user)
            return [datastore.to_api(pair, decrypt=decrypt) for pair in pairs]

        return self._run(work)

    def delete(self, name, *, scope, user) -> None:
        async def work(datastore: Datastore):
            if not await datastore.delete(name, scope=scope, user=user or RULE_USER):
                raise NotFound(f'datastore key "{name}" not found in scope st2kv.{scope}')

        self._run(work)


class KeysOnServer:
    """The datastore of a running server, through /api/v1/keys (what `st2 key` uses)."""

    def __init__(self, client) -> None:
        self._client = client

    def set(self, name, value, *, scope, user, secret, ttl) -> dict[str, Any]:
        body = {"name": name, "value": value, "scope": scope, "secret": secret}
        if user:
            body["user"] = user
        if ttl:
            body["ttl"] = ttl
        return run_on_server(lambda: self._client.put(f"/keys/{path_part(name)}", body).data)

    def get(self, name, *, scope, user, decrypt) -> dict[str, Any]:
        query = {"scope": scope, "user": user, "decrypt": "true" if decrypt else None}
        return run_on_server(lambda: self._client.get(f"/keys/{path_part(name)}", query).data)

    def list(self, *, prefix, scope, user, decrypt) -> list[dict[str, Any]]:
        query = {
            "prefix": prefix,
            "scope": scope,
            "user": user,
            "decrypt": "true" if decrypt else None,
            "limit": -1,
        }
        return run_on_server(lambda: self._client.get("/keys", query).data or [])

    def delete(self, name, *, scope, user) -> None:
        query = f"?scope={scope}" + (f"&user={path_part(user)}" if user else "")
        run_on_server(lambda: self._client.delete(f"/keys/{path_part(name)}{query}"))


def _keys(url: str | None, config_file: str | None, store_url: str | None):
    if url:
        return KeysOnServer(api_client(url, config_file, store_url))
    return KeysOnStore(config_file, store_url)


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
@target_options
def set_key(name, value, secret, ttl, scope, user, as_json, url, config_file, store_url) -> None:
    """Create or replace key NAME with VALUE."""
    keys = _keys(url, config_file, store_url)
    shown = keys.set(name, value, scope=scope, user=user, secret=secret, ttl=ttl)
    _show_one(shown, ("name", "value", "secret", "scope", "user", "expire_timestamp"), as_json)


@key_group.command("get")
@click.argument("name")
@click.option("--decrypt", is_flag=True, help="Show a secret's plaintext.")
@_scope_option
@_user_option
@_json_option
@target_options
def get_key(name, decrypt, scope, user, as_json, url, config_file, store_url) -> None:
    """Show key NAME (a secret shows its ciphertext unless --decrypt)."""
    keys = _keys(url, config_file, store_url)
    _show_one(keys.get(name, scope=scope, user=user, decrypt=decrypt), _LIST_COLUMNS, as_json)


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
@target_options
def list_keys(prefix, scope, user, decrypt, as_json, url, config_file, store_url) -> None:
    """List keys, ordered by scope, user and name."""
    keys = _keys(url, config_file, store_url)
    shown = keys.list(prefix=prefix, scope=scope, user=user, decrypt=decrypt)
    if as_json:
        print_json(shown)
        return
    print_table(_LIST_COLUMNS, [[_cell(item.get(c)) for c in _LIST_COLUMNS] for item in shown])


@key_group.command("delete")
@click.argument("name")
@_scope_option
@_user_option
@target_options
def delete_key(name, scope, user, url, config_file, store_url) -> None:
    """Delete key NAME."""
    _keys(url, config_file, store_url).delete(name, scope=scope, user=user)
    click.echo(f'deleted datastore key "{name}" (st2kv.{scope})')
