"""`hookyard signing-key rotate|show`: the rsa-sha256 key ring, without a running server."""

from __future__ import annotations

import click

from engine.cli.output import fail, print_json
from engine.config import load_settings
from engine.errors import EngineError
from engine.outbound.sender import KeyRingProvider


@click.group("signing-key")
def signing_key_group() -> None:
    """The RSA keys that sign rsa-sha256 outbound webhooks (published as JWKS)."""


def _provider(config_file: str | None) -> KeyRingProvider:
    return KeyRingProvider(load_settings(config_file))


@signing_key_group.command("rotate")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), envvar="HOOKYARD_CONFIG")
def rotate(config_file: str | None) -> None:
    """Make a new current key; the old public key stays in the JWKS for the grace period."""
    try:
        provider = _provider(config_file)
        if provider.pem_file is not None:
            fail("the signing key is outbound.signing_key_pem: configure another PEM to rotate")
        ring = provider.load()
        old = ring.current_kid
        new = ring.rotate()
    except EngineError as exc:
        fail(str(exc))
    click.echo(f"new signing key {new} (previous {old} stays published for the grace period)")


@signing_key_group.command("show")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), envvar="HOOKYARD_CONFIG")
def show(config_file: str | None) -> None:
    """Print the JWKS receivers verify with (as served at /.well-known/jwks.json)."""
    try:
        print_json(_provider(config_file).load().jwks())
    except EngineError as exc:
        fail(str(exc))
