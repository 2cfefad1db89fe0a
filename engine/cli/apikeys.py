"""`hookyard apikey create|list|set-role|extend|delete|disable|enable`: straight on the store.

No server needed: the same config file (and HOOKYARD_* variables) name the same store a
running `hookyard serve` uses, so a key created here works there at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from engine.cli.output import fail, print_json, print_table
from engine.config import load_settings
from engine.errors import EngineError
from engine.model.apikeys import ApiKeyError, new_api_key, parse_duration
from engine.model.roles import ROLES, Grants, RoleError, check_role
from engine.store import Store, create_store

T = TypeVar("T")

_config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="HOOKYARD_CONFIG",
    help="Config file (default: ./config.yaml if present).",
)
_store_option = click.option("--store", "store_url", help="Store URL (overrides store.url).")


def _on_store(
    config_file: str | None, store_url: str | None, work: Callable[[Store], Awaitable[T]]
) -> T:
    async def run() -> T:
        settings = load_settings(config_file)
        if store_url:
            settings = settings.replace(**{"store.url": store_url})
        store = create_store(settings.store, settings.resolve_path("."))
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except (EngineError, ApiKeyError) as exc:
        fail(str(exc))


@click.group("apikey")
def apikey_group() -> None:
    """Create and manage API keys (stored hashed; a key is shown only when created)."""


_role_option = click.option(
    "--role",
    type=click.Choice(ROLES),
    help="admin, operator (runs what --pack/--action grant), observer (reads), webhook "
    "(posts only). Default: webhook with --webhook/--trigger, operator with grants, "
    "else observer.",
)
_pack_option = click.option(
    "--pack", "packs", multiple=True, help="Operator may run this pack's actions (glob ok)."
)
_action_option = click.option(
    "--action", "actions", multiple=True, help="Operator may run this action ref (glob ok)."
)


@apikey_group.command("create")
@click.argument("name")
@_role_option
@_pack_option
@_action_option
@click.option("--webhook", "webhooks", multiple=True, help="Hook it may post to (repeatable).")
@click.option("--trigger", "triggers", multiple=True, help="Trigger or rule it may fire.")
@click.option("--expires-in", help="Lifetime such as 30d, 12h, 90m (default: never).")
@click.option("--admin", is_flag=True, help="Same as --role admin.")
@_config_option
@_store_option
def create(
    name, role, packs, actions, webhooks, triggers, expires_in, admin, config_file, store_url
) -> None:
    """Create a key and print it once."""
    try:
        lifetime = parse_duration(expires_in) if expires_in else None
        record, key = new_api_key(
            name,
            role=role,
            grants=Grants.from_api({"packs": list(packs), "actions": list(actions)}),
            admin=admin,
            webhooks=webhooks,
            triggers=triggers,
            lifetime=lifetime,
        )
    except (ApiKeyError, RoleError) as exc:
        fail(str(exc))
    _on_store(config_file, store_url, lambda store: store.create_api_key(record))
    click.echo(key)
    click.echo(
        f"created API key {record.name!r} (id {record.id}, role {record.role}); it is shown "
        "only this once",
        err=True,
    )


@apikey_group.command("set-role")
@click.argument("key_id")
@click.option("--role", type=click.Choice(ROLES), required=True, help="The key's new role.")
@_pack_option
@_action_option
@_config_option
@_store_option
def set_role(key_id, role, packs, actions, config_file, store_url) -> None:
    """Give a key another role (and an operator its grants, replacing the old ones)."""
    try:
        grants = Grants.from_api({"packs": list(packs), "actions": list(actions)})
    except RoleError as exc:
        fail(str(exc))

    async def work(store: Store):
        current = await store.get_api_key(key_id)
        try:
            checked = check_role(
                role,
                grants=grants,
                scoped=bool(current.webhooks or current.triggers),
                name=current.name,
            )
        except RoleError as exc:
            raise ApiKeyError(str(exc)) from None
        return await store.set_api_key_role(key_id, checked, grants)

    record = _on_store(config_file, store_url, work)
    click.echo(f"{record.id} role {record.role} (grants: {record.grants.describe()})")


@apikey_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_config_option
@_store_option
def list_keys(as_json, config_file, store_url) -> None:
    """List keys (never the keys themselves)."""
    keys = _on_store(config_file, store_url, lambda store: store.list_api_keys())
    shown: list[dict[str, Any]] = [k.to_api() for k in keys]
    if as_json:
        print_json(shown)
        return
    print_table(
        ("id", "name", "prefix", "role", "grants", "webhooks", "expires_at", "enabled"),
        [
            (
                k["id"],
                k["name"],
                k["key_prefix"],
                k["role"],
                ",".join([*k["grants"]["packs"], *k["grants"]["actions"]]) or "-",
                ",".join(k["webhooks"]) or ("-" if k["role"] == "observer" else "(all)"),
                k["expires_at"] or "never",
                "yes" if k["enabled"] else "no",
            )
            for k in shown
        ],
    )


@apikey_group.command("extend")
@click.argument("key_id")
@click.option("--by", "by", required=True, help="How much longer, e.g. 30d.")
@_config_option
@_store_option
def extend(key_id, by, config_file, store_url) -> None:
    """Push a key's expiry further (from now if it already expired)."""
    try:
        duration = parse_duration(by)
    except ApiKeyError as exc:
        fail(str(exc))
    record = _on_store(config_file, store_url, lambda store: store.extend_api_key(key_id, duration))
    click.echo(f"{record.id} expires at {record.to_api()['expires_at'] or 'never'}")


@apikey_group.command("delete")
@click.argument("key_ids", nargs=-1, required=True)
@_config_option
@_store_option
def delete(key_ids, config_file, store_url) -> None:
    """Delete keys by id."""
    deleted = _on_store(config_file, store_url, lambda store: store.delete_api_keys(key_ids))
    for key_id in deleted:
        click.echo(f"deleted {key_id}")
    missing = [k for k in key_ids if k not in deleted]
    if missing:
        fail(f"no API key with id {', '.join(missing)}")


def _switch(enabled: bool):
    @_config_option
    @_store_option
    @click.argument("key_id")
    def command(key_id, config_file, store_url) -> None:
        record = _on_store(
            config_file, store_url, lambda store: store.set_api_key_enabled(key_id, enabled)
        )
        click.echo(f"{record.id} {'enabled' if record.enabled else 'disabled'}")

    return command


apikey_group.command("disable", help="Refuse a key (403) without deleting it.")(_switch(False))
apikey_group.command("enable", help="Accept a disabled key again.")(_switch(True))
