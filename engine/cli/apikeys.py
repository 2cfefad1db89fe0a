"""`hookyard apikey create|list|set-role|extend|delete|disable|enable`.

With `--url`/HOOKYARD_URL through the server's /api/v1/apikeys (an admin key in
HOOKYARD_API_KEY). Without it straight on the store — no server needed: the same config
file (and HOOKYARD_* variables) name the same store a running `hookyard serve` uses, so a
key created here works there at once; the store is named on stderr.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import click

from engine.cli.client import ApiClient, path_part
from engine.cli.local_store import api_client, run_on_server, run_on_store, target_options
from engine.cli.output import fail, print_json, print_table
from engine.model.apikeys import ApiKeyError, new_api_key, parse_duration, rate_from_api
from engine.model.roles import ROLES, Grants, RoleError, check_role
from engine.store import Store


class KeysOnStore:
    """API keys written straight to the store from the config file or --store."""

    def __init__(self, config_file: str | None, store_url: str | None) -> None:
        self._config_file = config_file
        self._store_url = store_url

    def _run(self, work):
        return run_on_store(
            self._config_file,
            self._store_url,
            lambda store, _: work(store),
            failures=(ApiKeyError,),
        )

    def create(self, name: str, fields: dict[str, Any], lifetime: timedelta | None):
        try:
            record, key = new_api_key(
                name,
                role=fields["role"],
                grants=Grants.from_api(fields["grants"]),
                admin=fields["admin"],
                webhooks=fields["webhooks"],
                triggers=fields["triggers"],
                lifetime=lifetime,
                rate_limit=fields["rate_limit"][0],
                rate_burst=fields["rate_limit"][1],
            )
        except (ApiKeyError, RoleError) as exc:
            fail(str(exc))
        self._run(lambda store: store.create_api_key(record))
        return record.to_api(), key

    def set_role(self, key_id: str, role: str, grants: Grants) -> dict[str, Any]:
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

        return self._run(work).to_api()

    def list(self) -> list[dict[str, Any]]:
        return [k.to_api() for k in self._run(lambda store: store.list_api_keys())]

    def extend(self, key_id: str, by: timedelta) -> dict[str, Any]:
        return self._run(lambda store: store.extend_api_key(key_id, by)).to_api()

    def delete(self, key_ids: tuple[str, ...]) -> list[str]:
        return list(self._run(lambda store: store.delete_api_keys(key_ids)))

    def set_enabled(self, key_id: str, enabled: bool) -> dict[str, Any]:
        return self._run(lambda store: store.set_api_key_enabled(key_id, enabled)).to_api()

    def set_rate(self, key_id: str, rate: float, burst: float) -> dict[str, Any]:
        return self._run(lambda store: store.set_api_key_rate(key_id, rate, burst)).to_api()


class KeysOnServer:
    """API keys of a running server, through /api/v1/apikeys (an admin key needed)."""

    def __init__(self, client: ApiClient) -> None:
        self._client = client

    def create(self, name: str, fields: dict[str, Any], lifetime: timedelta | None):
        rate, burst = fields["rate_limit"]
        body = {**{"name": name, **fields}, "rate_limit": _api_rate(rate, burst)}
        if lifetime is not None:
            body["expiration"] = _api_lifetime(lifetime)
        created = run_on_server(lambda: self._client.post("/apikeys", body).data)
        key = created.pop("key")
        return created, key

    def set_role(self, key_id: str, role: str, grants: Grants) -> dict[str, Any]:
        body = {"role": role, "grants": grants.to_api()}
        return run_on_server(lambda: self._client.put(f"/apikeys/{path_part(key_id)}", body).data)

    def list(self) -> list[dict[str, Any]]:
        return run_on_server(lambda: self._client.get("/apikeys").data or [])

    def extend(self, key_id: str, by: timedelta) -> dict[str, Any]:
        path = f"/apikeys/{path_part(key_id)}/extend"
        return run_on_server(lambda: self._client.patch(path, _api_lifetime(by)).data)

    def delete(self, key_ids: tuple[str, ...]) -> list[str]:
        reply = run_on_server(lambda: self._client.delete_with("/apikeys", {"ids": list(key_ids)}))
        return list(reply.data["deleted"])

    def set_enabled(self, key_id: str, enabled: bool) -> dict[str, Any]:
        path = f"/apikeys/{path_part(key_id)}"
        return run_on_server(lambda: self._client.put(path, {"enabled": enabled}).data)

    def set_rate(self, key_id: str, rate: float, burst: float) -> dict[str, Any]:
        path = f"/apikeys/{path_part(key_id)}"
        body = {"rate_limit": _api_rate(rate, burst)}
        return run_on_server(lambda: self._client.put(path, body).data)


def _api_rate(rate: float, burst: float) -> dict[str, float] | None:
    return {"rate": rate, "burst": burst} if rate else None


def _api_lifetime(duration: timedelta) -> dict[str, Any]:
    return {"count": int(duration.total_seconds()), "interval": "seconds"}


def _keys(url: str | None, config_file: str | None, store_url: str | None):
    if url:
        return KeysOnServer(api_client(url, config_file, store_url))
    return KeysOnStore(config_file, store_url)


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
_rate_option = click.option(
    "--rate", help="Requests per second it may make, e.g. 100/s or 6000/m (default: no limit)."
)
_burst_option = click.option(
    "--burst", type=click.FloatRange(min=0), help="Requests above the rate at once (default: 1 s)."
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
@_rate_option
@_burst_option
@target_options
def create(
    name,
    role,
    packs,
    actions,
    webhooks,
    triggers,
    expires_in,
    admin,
    rate,
    burst,
    url,
    config_file,
    store_url,
) -> None:
    """Create a key and print it once."""
    try:
        lifetime = parse_duration(expires_in) if expires_in else None
        rate_limit = _rate(rate, burst)
    except ApiKeyError as exc:
        fail(str(exc))
    fields = {
        "role": role,
        "grants": {"packs": list(packs), "actions": list(actions)},
        "admin": admin,
        "webhooks": list(webhooks),
        "triggers": list(triggers),
        "rate_limit": rate_limit,
    }
    record, key = _keys(url, config_file, store_url).create(name, fields, lifetime)
    click.echo(key)
    click.echo(
        f"created API key {record['name']!r} (id {record['id']}, role {record['role']}); "
        "it is shown only this once",
        err=True,
    )


@apikey_group.command("set-role")
@click.argument("key_id")
@click.option("--role", type=click.Choice(ROLES), required=True, help="The key's new role.")
@_pack_option
@_action_option
@target_options
def set_role(key_id, role, packs, actions, url, config_file, store_url) -> None:
    """Give a key another role (and an operator its grants, replacing the old ones)."""
    try:
        grants = Grants.from_api({"packs": list(packs), "actions": list(actions)})
    except RoleError as exc:
        fail(str(exc))
    record = _keys(url, config_file, store_url).set_role(key_id, role, grants)
    shown = Grants.from_api(record["grants"]).describe()
    click.echo(f"{record['id']} role {record['role']} (grants: {shown})")


@apikey_group.command("set-rate")
@click.argument("key_id")
@click.option("--rate", required=True, help="Requests per second (100/s, 6000/m); 0: no limit.")
@_burst_option
@target_options
def set_rate(key_id, rate, burst, url, config_file, store_url) -> None:
    """Limit how fast a key may post and call the API (429 with Retry-After past it)."""
    try:
        limit, extra = _rate(rate, burst)
    except ApiKeyError as exc:
        fail(str(exc))
    record = _keys(url, config_file, store_url).set_rate(key_id, limit, extra)
    shown = record["rate_limit"]
    click.echo(
        f"{record['id']} "
        + (f"{shown['rate']:g}/s, burst {shown['burst']:g}" if shown else "no rate limit")
    )


def _rate(rate: str | None, burst: float | None) -> tuple[float, float]:
    if rate is None:
        if burst is not None:
            raise ApiKeyError("--burst needs --rate")
        return 0.0, 0.0
    return rate_from_api({"rate": rate, "burst": burst or 0})


@apikey_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@target_options
def list_keys(as_json, url, config_file, store_url) -> None:
    """List keys (never the keys themselves)."""
    shown = _keys(url, config_file, store_url).list()
    if as_json:
        print_json(shown)
        return
    print_table(
        ("id", "name", "prefix", "role", "grants", "webhooks", "rate", "expires_at", "enabled"),
        [
            (
                k["id"],
                k["name"],
                k["key_prefix"],
                k["role"],
                ",".join([*k["grants"]["packs"], *k["grants"]["actions"]]) or "-",
                ",".join(k["webhooks"]) or ("-" if k["role"] == "observer" else "(all)"),
                f"{k['rate_limit']['rate']:g}/s" if k.get("rate_limit") else "-",
                k["expires_at"] or "never",
                "yes" if k["enabled"] else "no",
            )
            for k in shown
        ],
    )


@apikey_group.command("extend")
@click.argument("key_id")
@click.option("--by", "by", required=True, help="How much longer, e.g. 30d.")
@target_options
def extend(key_id, by, url, config_file, store_url) -> None:
    """Push a key's expiry further (from now if it already expired)."""
    try:
        duration = parse_duration(by)
    except ApiKeyError as exc:
        fail(str(exc))
    record = _keys(url, config_file, store_url).extend(key_id, duration)
    click.echo(f"{record['id']} expires at {record['expires_at'] or 'never'}")


@apikey_group.command("delete")
@click.argument("key_ids", nargs=-1, required=True)
@target_options
def delete(key_ids, url, config_file, store_url) -> None:
    """Delete keys by id."""
    deleted = _keys(url, config_file, store_url).delete(key_ids)
    for key_id in deleted:
        click.echo(f"deleted {key_id}")
    missing = [k for k in key_ids if k not in deleted]
    if missing:
        fail(f"no API key with id {', '.join(missing)}")


def _switch(enabled: bool):
    @target_options
    @click.argument("key_id")
    def command(key_id, url, config_file, store_url) -> None:
        record = _keys(url, config_file, store_url).set_enabled(key_id, enabled)
        click.echo(f"{record['id']} {'enabled' if record['enabled'] else 'disabled'}")

    return command


apikey_group.command("disable", help="Refuse a key (403) without deleting it.")(_switch(False))
apikey_group.command("enable", help="Accept a disabled key again.")(_switch(True))
