"""`hookyard pack install PATH...`, `pack remove PACK`, `pack setup-virtualenv PACK`: packs
on disk and their virtualenvs (engine.runners.pack_virtualenv), as `st2 pack install`,
`remove` and `setup_virtualenv` for packs in local folders.

They work on the config's packs folders and `packs.virtualenvs_dir` directly, no server
needed: a running server sees an installed or removed pack at its next reload
(`POST /api/v1/reload`, or `hookyard serve --watch`), and a pack's next Python action or
sensor (re)start uses its new virtualenv. A failed pip install exits non-zero with pip's
own output and leaves the pack's previous virtualenv (or none) in place — and `install`
leaves that pack out; other packs are not touched.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import click

from engine.cli.output import fail
from engine.config import Settings, load_settings
from engine.errors import EngineError
from engine.packs.loader import CORE_REF, PACK_FILE
from engine.packs.metadata import read_metadata
from engine.packs.pack import read_pack_metadata
from engine.runners.pack_virtualenv import (
    REQUIREMENTS_FILE,
    setup_virtualenv,
    virtualenv_path,
)

_CONFIG_OPTION = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="HOOKYARD_CONFIG",
    help="Config file naming packs_dirs and packs.virtualenvs_dir (default: ./config.yaml).",
)


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
@_CONFIG_OPTION
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


def _pack_ref(folder: Path) -> str:
    meta = folder / PACK_FILE
    if not folder.is_dir() or not meta.is_file():
        raise EngineError(f"{folder} is not a pack: it has no {PACK_FILE}")
    ref, _ = read_pack_metadata(read_metadata(meta))
    return ref


async def _install(settings: Settings, source: Path, link: bool) -> str:
    ref = _pack_ref(source)
    if ref == CORE_REF:
        raise EngineError("the core pack is built in; it is not installed")
    virtualenv_path(settings.resolve_path(settings.packs.virtualenvs_dir), ref)  # a safe ref
    if not settings.packs_dirs:
        raise EngineError("the config names no packs_dirs to install into")
    target = settings.resolve_path(settings.packs_dirs[0]) / ref
    try:
        installed = find_pack(settings, ref)
    except EngineError:
        installed = None
    if installed is not None or target.exists() or target.is_symlink():
        where = installed or target
        raise EngineError(f"already installed at {where}; `hookyard pack remove {ref}` first")
    target.parent.mkdir(parents=True, exist_ok=True)
    if link:
        target.symlink_to(source.resolve(), target_is_directory=True)
    else:
        # Links inside the pack stay links: copying never reads outside the pack.
        shutil.copytree(source, target, symlinks=True)
    if (target / REQUIREMENTS_FILE).is_file():
        root = settings.resolve_path(settings.packs.virtualenvs_dir)
        try:
            await setup_virtualenv(root, ref, target)
        except BaseException:
            _remove_folder(target)  # a pack whose requirements fail is not left half there
            raise
    return f"pack {ref!r}: installed at {target}" + (" (linked)" if link else "")


def _remove_folder(folder: Path) -> None:
    if folder.is_symlink():
        folder.unlink()
    else:
        shutil.rmtree(folder)


@click.command("install")
@_CONFIG_OPTION
@click.option("--link", is_flag=True, help="Link each pack folder instead of copying it.")
@click.argument("paths", nargs=-1, required=True, type=click.Path(file_okay=False))
def install_command(config_file: str | None, link: bool, paths: tuple[str, ...]) -> None:
    """Copy (or link) the pack folders PATHS into the first packs folder and build the
    virtualenv of each that has a requirements.txt. Each pack on its own: one that fails
    is reported and left out, the others are installed."""
    try:
        settings = load_settings(config_file)
    except EngineError as exc:
        fail(str(exc))
    failures = 0
    for path in paths:
        try:
            click.echo(asyncio.run(_install(settings, Path(path), link)))
        except EngineError as exc:
            failures += 1
            click.echo(f"{path}: not installed: {exc}", err=True)
    if failures:
        fail(f"{failures} of {len(paths)} packs not installed")
    click.echo("a running server loads them at its next reload (POST /api/v1/reload)")


@click.command("remove")
@_CONFIG_OPTION
@click.argument("ref")
def remove_command(config_file: str | None, ref: str) -> None:
    """Remove pack REF's folder from the first packs folder (a linked pack: the link
    only) and its virtualenv."""
    try:
        settings = load_settings(config_file)
        folder = find_pack(settings, ref)
        install_dir = settings.resolve_path(settings.packs_dirs[0])
        if folder.parent.resolve() != install_dir.resolve():
            # Another packs folder is the user's own (a checkout, say): not ours to delete.
            raise EngineError(
                f"it lives in {folder.parent}, not in {install_dir} where packs are "
                "installed; remove it by hand"
            )
        venv = virtualenv_path(settings.resolve_path(settings.packs.virtualenvs_dir), ref)
        _remove_folder(folder)
        shutil.rmtree(venv, ignore_errors=True)
    except (EngineError, OSError) as exc:
        fail(f"pack {ref!r} not removed: {exc}")
    click.echo(f"pack {ref!r}: removed {folder}")
