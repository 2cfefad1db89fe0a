"""`hookyard pack setup-virtualenv PACK`: build the pack's virtualenv from its
requirements.txt (engine.runners.pack_virtualenv), as `st2 pack setup_virtualenv`.

It works on the config's packs folders and `packs.virtualenvs_dir` directly, no server
needed: a running server's next Python action or sensor (re)start of that pack uses it.
A failed install exits non-zero with pip's own output and leaves the pack's previous
virtualenv (or none) in place; other packs are not touched.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from engine.cli.output import fail
from engine.config import Settings, load_settings
from engine.errors import EngineError
from engine.packs.loader import PACK_FILE
from engine.packs.metadata import read_metadata
from engine.packs.pack import read_pack_metadata
from engine.runners.pack_virtualenv import setup_virtualenv


def find_pack(settings: Settings, ref: str) -> Path:
    """The folder of pack `ref` in the configured packs folders (EngineError if none)."""
    for packs_dir in settings.packs_dirs:
        folder = settings.resolve_path(packs_dir)
        if not folder.is_dir():
            continue
        for candidate in sorted(folder.iterdir()):
            meta = candidate / PACK_FILE
            if not meta.is_file():
                continue
            try:
                found, _ = read_pack_metadata(read_metadata(meta))
            except EngineError:
                continue  # a broken pack is `hookyard rule validate`'s to report
            if found == ref:
                return candidate
    searched = ", ".join(str(settings.resolve_path(p)) for p in settings.packs_dirs)
    raise EngineError(f"no pack {ref!r} in the packs folders ({searched})")


@click.command("setup-virtualenv")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="HOOKYARD_CONFIG",
    help="Config file naming packs_dirs and packs.virtualenvs_dir (default: ./config.yaml).",
)
@click.argument("ref")
def setup_virtualenv_command(config_file: str | None, ref: str) -> None:
    """Build PACK's virtualenv from its requirements.txt; its Python actions and sensors
    then run in it."""
    try:
        settings = load_settings(config_file)
        pack_dir = find_pack(settings, ref)
        root = settings.resolve_path(settings.packs.virtualenvs_dir)
        done = asyncio.run(setup_virtualenv(root, ref, pack_dir))
    except EngineError as exc:
        fail(f"pack {ref!r}: virtualenv not set up: {exc}")
    what = f"installed {done.requirements}" if done.requirements else "no requirements.txt"
    click.echo(f"pack {ref!r}: virtualenv {done.path} ready ({what})")
