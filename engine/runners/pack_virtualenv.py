"""Per-pack virtualenvs, as StackStorm's ``st2 pack setup_virtualenv``: ``<root>/<pack>``
built with ``python -m venv`` and the pack's ``requirements.txt`` installed by pip; a
pack's Python actions and sensors run with its interpreter when it exists.

The engine's own interpreter makes the venv, so the child hosts
(engine.runners.python_host, sensor_host: standard library only) import the same engine
through PYTHONPATH. The venv is built beside its final place and renamed into it only once
pip succeeded: a failed install leaves the previous venv (or none) in service, and reports
pip's own output.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import engine
from engine.errors import RunnerError

REQUIREMENTS_FILE = "requirements.txt"
# pip may have to build or download; a pack whose install takes longer is reported.
SETUP_TIMEOUT_SECONDS = 900.0
# Lines of pip's output kept in the report of a failure.
PIP_OUTPUT_LINES = 40
# The folder holding the engine package: on PYTHONPATH of a child run by a pack's venv.
ENGINE_ROOT = str(Path(engine.__file__).resolve().parent.parent)
_PACK_REF = re.compile(r"^[a-z0-9_][a-z0-9_-]{0,254}$", re.IGNORECASE)


@dataclass(frozen=True)
class VirtualenvSetup:
    path: str
    requirements: str | None  # the requirements file installed, None when the pack has none
    pip_output: str


def virtualenv_path(root: str | os.PathLike[str], pack: str) -> Path:
    if not _PACK_REF.match(pack) or pack in (".", ".."):
        raise RunnerError(f"{pack[:60]!r} is not a pack ref")
    return Path(root) / pack


def pack_interpreter(root: str | os.PathLike[str], pack: str) -> str | None:
    """The Python of the pack's virtualenv, None when it has none (the engine's then)."""
    try:
        python = virtualenv_path(root, pack) / "bin" / "python"
    except RunnerError:
        return None
    return str(python) if python.exists() else None


async def setup_virtualenv(
    root: str | os.PathLike[str], pack: str, pack_dir: str | os.PathLike[str]
) -> VirtualenvSetup:
    """(Re)build the pack's virtualenv; RunnerError naming what failed, with pip's output."""
    final = virtualenv_path(root, pack)
    building = final.with_name(f".{pack}.building")
    shutil.rmtree(building, ignore_errors=True)
    building.parent.mkdir(parents=True, exist_ok=True)
    try:
        await _run([sys.executable, "-m", "venv", str(building)], cwd=str(pack_dir), what="venv")
        requirements = Path(pack_dir) / REQUIREMENTS_FILE
        output = ""
        if requirements.is_file():
            # cwd is the pack: relative paths in requirements.txt are the pack's files.
            output = await _run(
                [
                    str(building / "bin" / "python"), "-m", "pip", "install",
                    "--disable-pip-version-check", "--no-input", "-r", str(requirements),
                ],
                cwd=str(pack_dir),
                what=f"pip install -r {requirements}",
            )  # fmt: skip
        # The interpreter finds its site-packages from where bin/python sits, so the
        # renamed venv works (only its scripts' shebangs name the old folder; the engine
        # runs `bin/python` itself).
        shutil.rmtree(final, ignore_errors=True)
        building.rename(final)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return VirtualenvSetup(
        str(final), str(requirements) if requirements.is_file() else None, output
    )


async def _run(argv: list[str], *, cwd: str | None, what: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), SETUP_TIMEOUT_SECONDS)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RunnerError(f"{what} took longer than {SETUP_TIMEOUT_SECONDS:g}s") from None
    text = out.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        tail = "\n".join(text.rstrip().splitlines()[-PIP_OUTPUT_LINES:])
        raise RunnerError(f"{what} failed (exit code {proc.returncode}):\n{tail}")
    return text
