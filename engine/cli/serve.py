"""`hookyard serve`."""

from __future__ import annotations

import asyncio

import click

from engine.cli.output import fail
from engine.config import load_settings, validate_roles
from engine.errors import EngineError
from engine.http.server import serve
from engine.support.logs import configure_logging


@click.command("serve")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="HOOKYARD_CONFIG",
    help="Config file (default: ./config.yaml if present).",
)
@click.option("--host", help="Listen address (server.host).")
@click.option("--port", type=int, help="Listen port (server.port).")
@click.option("--store", "store_url", help="Store URL: sqlite:///path.db or postgresql://...")
@click.option(
    "--rules",
    "rules_dirs",
    multiple=True,
    type=click.Path(),
    help="Rules folder (repeatable; replaces rules_dirs).",
)
@click.option(
    "--packs",
    "packs_dirs",
    multiple=True,
    type=click.Path(),
    help="Packs folder (repeatable; replaces packs_dirs).",
)
@click.option("--roles", help="Comma-separated roles to run here: api,rules")
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Log line format.")
@click.option("--log-level", help="DEBUG, INFO, WARNING, ERROR.")
@click.option(
    "--watch",
    is_flag=True,
    help="Reload rules, packs and webhook definitions when their files change.",
)
def serve_command(
    config_file, host, port, store_url, rules_dirs, packs_dirs, roles, log_format, log_level, watch
) -> None:
    """Accept webhooks, evaluate rules and record what they decided."""
    try:
        settings = load_settings(config_file)
        changes = {
            "server.host": host,
            "server.port": port,
            "store.url": store_url,
            "rules_dirs": list(rules_dirs) or None,
            "packs_dirs": list(packs_dirs) or None,
            "roles": [r.strip() for r in roles.split(",") if r.strip()] if roles else None,
            "logging.format": log_format,
            "logging.level": log_level,
        }
        # Paths given on the command line are relative to where the command runs.
        for key in ("rules_dirs", "packs_dirs"):
            if changes[key]:
                changes[key] = [str(click.format_filename(p)) for p in changes[key]]
                changes[key] = [_absolute(p) for p in changes[key]]
        settings = settings.replace(**{k: v for k, v in changes.items() if v is not None})
        configure_logging(settings.logging.level, settings.logging.format)
        validate_roles(settings.roles, "--roles")
        asyncio.run(serve(settings, watch=watch))
    except EngineError as exc:
        fail(str(exc))
    except OSError as exc:  # port in use, permission denied
        fail(f"cannot listen: {exc.strerror or exc}")


def _absolute(path: str) -> str:
    from pathlib import Path

    return str(Path(path).resolve())
