"""Real `hookyard serve` processes on loopback, started and always cleaned up per test.

`serve.start(...)` runs `python -m engine serve` in its own working folder with a free
port, logs (stdout and stderr) to a file, and waits until `GET /ready` answers 200.
`serve.run(...)` runs a serve command that is expected to exit (bad arguments, busy port)
and returns its CompletedProcess with stderr kept apart. At teardown every process still
running is killed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.postgres import scratch_database
from tests.support.serve import ServeLauncher


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
