"""Real `hookyard serve` processes on loopback, started and always cleaned up per test.

`serve.start(...)` runs `python -m engine serve` in its own working folder with a free
port, logs (stdout and stderr) to a file, and waits until `GET /ready` answers 200.
`serve.run(...)` runs a serve command that is expected to exit (bad arguments, busy port)
and returns its CompletedProcess with stderr kept apart. At teardown every process still
running is killed.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.postgres import scratch_database
from tests.support.serve import ServeLauncher
from tests.support.st2 import INSTALL_TIMEOUT, ST2, ST2_VENV, ST2CLIENT, st2client_installed


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeLauncher]:
    launcher = ServeLauncher(tmp_path)
    try:
        yield launcher
    finally:
        launcher.close()


@pytest.fixture(scope="module")
def module_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeLauncher]:
    """A launcher shared by one test module: its tests may share one serve process."""
    launcher = ServeLauncher(tmp_path_factory.mktemp("serve"))
    try:
        yield launcher
    finally:
        launcher.close()


@pytest.fixture
async def pg_database() -> AsyncIterator[str]:
    """A fresh database on the server named by HOOKYARD_TEST_PG, dropped afterwards (the
    test skips without it)."""
    async with scratch_database("hookyard_acc") as url:
        yield url


@pytest.fixture(scope="session")
def st2_cli() -> Path:
    """The official st2 CLI in its own virtualenv, installed once (tests.support.st2)."""
    if not st2client_installed():
        steps = (
            [sys.executable, "-m", "venv", "--clear", str(ST2_VENV)],
            [str(ST2_VENV / "bin" / "python"), "-m", "pip", "install", "-q", ST2CLIENT],
        )
        for step in steps:
            result = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
            if result.returncode != 0:
                pytest.fail(
                    f"installing {ST2CLIENT} failed: {' '.join(step)}\n"
                    f"{result.stdout}\n{result.stderr}"
                )
        assert st2client_installed(), f"{ST2} missing after installing {ST2CLIENT}"
    return ST2
