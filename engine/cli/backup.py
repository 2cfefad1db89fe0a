"""`hookyard backup FILE`, `hookyard restore FILE`, `hookyard migrate --to URL`.

The store is the one config.yaml names (or `--store`), as for `hookyard key`. A backup is
always an SQLite file — a consistent online copy of an SQLite store, or one snapshot of a
PostgreSQL store's tables — so it restores into either kind. `migrate` copies the store
into another (typically a new PostgreSQL database when one machine is outgrown). Restore
and migrate write only into an empty store and check afterwards that every table holds
as many rows as the source (engine.store.transfer).
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
from pathlib import Path

import click

from engine.cli.output import fail, print_table
from engine.config import Settings, load_settings
from engine.errors import EngineError
from engine.store import create_store
from engine.store.codec import redact_url
from engine.store.transfer import (
    Copied,
    pg_to_sqlite,
    sqlite_online_backup,
    sqlite_to_pg,
    sqlite_to_sqlite,
)
from engine.support.logs import configure_logging

_config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="HOOKYARD_CONFIG",
    help="Config file naming the store (default: ./config.yaml if present).",
)
_store_option = click.option("--store", "store_url", help="Store URL (overrides store.url).")


def _settings(config_file: str | None, store_url: str | None) -> Settings:
    settings = load_settings(config_file)
    return settings.replace(**{"store.url": store_url}) if store_url else settings


async def _prepared(settings: Settings, url: str) -> Path | None:
    """Open the store at `url` once (creating or migrating its schema) and close it; its
    file for SQLite, None for PostgreSQL."""
    store = create_store(dataclasses.replace(settings.store, url=url), settings.resolve_path("."))
    await store.open()
    await store.close()
    path = getattr(store, "path", None)
    return None if path is None else Path(path)


def _run(work) -> Copied | None:
    configure_logging("WARNING")
    try:
        return asyncio.run(work())
    except EngineError as exc:
        fail(str(exc))


def _report(copied: Copied | None, what: str) -> None:
    if copied is not None:
        print_table(("table", "rows"), sorted(copied.counts.items()))
    click.echo(what, err=True)


@click.command("backup")
@click.argument("file", type=click.Path(dir_okay=False))
@_config_option
@_store_option
def backup_command(file: str, config_file: str | None, store_url: str | None) -> None:
    """Write a consistent copy of the store to FILE (a new SQLite file), while it runs."""
    settings = _settings(config_file, store_url)
    target = Path(file).resolve()
    if target.exists():
        fail(f"{target} exists already; give a new file name")

    async def work() -> Copied | None:
        source = await _prepared(settings, settings.store.url)
        if source is not None:
            sqlite_online_backup(source, target)
            return None
        try:
            await _prepared(settings, f"sqlite:///{target}")
            return await pg_to_sqlite(settings.store.url, target)
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    copied = _run(work)
    _report(copied, f"backed up {redact_url(settings.store.url)} to {target}")


@click.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@_config_option
@_store_option
def restore_command(file: str, config_file: str | None, store_url: str | None) -> None:
    """Copy the backup FILE into the store, which must be empty (a new database)."""
    settings = _settings(config_file, store_url)

    async def work() -> Copied:
        with tempfile.TemporaryDirectory() as folder:
            # A backup made by an earlier version is brought to this schema on a copy;
            # the backup file itself is never written.
            source = Path(folder) / "backup.db"
            shutil.copyfile(file, source)
            await _prepared(settings, f"sqlite:///{source}")
            return await _copy(settings, source, settings.store.url)

    copied = _run(work)
    _report(copied, f"restored {file} into {redact_url(settings.store.url)}")


@click.command("migrate")
@click.option("--to", "target_url", required=True, help="The empty store to copy into.")
@_config_option
@_store_option
def migrate_command(target_url: str, config_file: str | None, store_url: str | None) -> None:
    """Copy the store into another (e.g. SQLite into a new PostgreSQL database).

    Stop `hookyard serve` first: what it writes after the copy began is not copied.
    """
    settings = _settings(config_file, store_url)

    async def work() -> Copied:
        source = await _prepared(settings, settings.store.url)
        if source is None:
            raise EngineError(
                "the store is PostgreSQL: copy it with `hookyard backup FILE` and "
                "`hookyard restore FILE --store <target>`, or with pg_dump"
            )
        return await _copy(settings, source, target_url)

    copied = _run(work)
    _report(copied, f"copied {redact_url(settings.store.url)} into {redact_url(target_url)}")


async def _copy(settings: Settings, source: Path, target_url: str) -> Copied:
    target = await _prepared(settings, target_url)
    if target is None:
        return await sqlite_to_pg(source, target_url)
    if target.resolve() == source.resolve():
        raise EngineError("the source and the destination are the same file")
    return await sqlite_to_sqlite(source, target)
