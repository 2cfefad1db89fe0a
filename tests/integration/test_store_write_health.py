"""A SQLite store that cannot be written (issue 15 item 11a, 11b), on real files.

How a file is made unwritable here: these tests run as root, which ignores permission
bits, so chmod cannot do it. The immutable attribute can (chattr +i, on ext4, xfs, btrfs):
open(2) for writing and access(2) then fail with EPERM for root too. That is what the
attack used. A read-only bind mount would also do, but needs mount privileges. As
another user, chmod is enough. When neither works the tests skip.

Only the database file and its -wal are made immutable while a store is open, never its
-shm: the process has the -shm memory-mapped, and its next write to a page of an
immutable mapped file is a SIGBUS (the crash of the issue), which would kill pytest.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from engine.config import IngestSettings, Settings, StoreSettings
from engine.errors import StoreUnavailable
from engine.http.app import create_app
from engine.http.context import RUNTIME
from engine.store import create_store
from tests.support.app import settings_for
from tests.support.packs import noop_rule

ROOT = Path(__file__).parents[2]
HOOK_RULE = noop_rule("hook", "catch_all")


@pytest.fixture
def unwritable() -> Iterator:
    """make(path): `path` can no longer be written by this process; undone at teardown."""
    made: list[Path] = []

    def make(path: Path) -> None:
        if os.geteuid() != 0:
            path.chmod(0o444)
            made.append(path)
            return
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"chattr +i is not available here: {done.stderr.decode().strip()}")
        made.append(path)

    def undo(path: Path) -> None:
        if os.geteuid() != 0:
            path.chmod(0o644)
        else:
            subprocess.run(["chattr", "-i", str(path)], check=False)

    make.undo = undo  # type: ignore[attr-defined]
    yield make
    for path in made:
        with contextlib.suppress(OSError):
            undo(path)


async def existing_store(path: Path) -> None:
    store = create_store(StoreSettings(url=f"sqlite:///{path}"), path.parent)
    await store.open()
    await store.close()


async def test_an_unwritable_database_fails_at_open_with_what_to_do(tmp_path, unwritable):
    db = tmp_path / "hookyard.db"
    await existing_store(db)
    unwritable(db)
    store = create_store(StoreSettings(url=f"sqlite:///{db}"), tmp_path)
    with pytest.raises(StoreUnavailable, match="cannot open the database for writing") as caught:
        await store.open()
    assert "immutable" in str(caught.value) and str(db) in str(caught.value)


async def test_serve_exits_non_zero_on_an_unwritable_database(tmp_path, unwritable):
    db = tmp_path / "hookyard.db"
    await existing_store(db)
    unwritable(db)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKYARD_")}
    env["PYTHONPATH"] = str(ROOT)
    env["HOOKYARD_AUTH__ENABLED"] = "false"
    done = subprocess.run(
        [sys.executable, "-m", "engine", "serve", "--store", f"sqlite:///{db}", "--port", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "cannot open the database for writing" in done.stderr, done.stderr
    assert done.returncode != -7  # not SIGBUS


def health_settings(tmp_path: Path, *, writer_process: bool) -> Settings:
    return settings_for(
        tmp_path,
        rules={"hook": HOOK_RULE},
        ingest=IngestSettings(writer_process=writer_process),
    )


async def ready(client: TestClient) -> tuple[int, dict]:
    response = await client.get("/ready")
    return response.status, await response.json()


@pytest.mark.parametrize("writer_process", [True, False], ids=["writer-process", "in-process"])
async def test_ready_is_503_while_the_database_files_cannot_be_written(
    tmp_path, unwritable, writer_process
):
    app = create_app(health_settings(tmp_path, writer_process=writer_process))
    async with TestClient(TestServer(app)) as client:
        assert (await ready(client))[0] == 200
        db = tmp_path / "hookyard.db"
        files = [db, db.with_name(db.name + "-wal")]
        for path in files:
            unwritable(path)
        status, body = await ready(client)
        assert status == 503
        assert "store refuses writes" in body["problems"]
        for path in files:
            unwritable.undo(path)
        assert (await ready(client))[0] == 200


async def test_ready_is_503_after_a_write_the_database_refused_until_one_succeeds(tmp_path):
    app = create_app(health_settings(tmp_path, writer_process=False))
    async with TestClient(TestServer(app)) as client:
        store = app[RUNTIME].store
        conn = store._loop_conn  # the connection webhooks are written with
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")  # the database is full
        refused = await client.post("/webhooks/hook", json={"pad": "x" * 200_000})
        assert refused.status == 503
        status, body = await ready(client)
        assert status == 503 and "store refuses writes" in body["problems"]
        conn.execute("PRAGMA max_page_count = 1073741823")
        accepted = await client.post("/webhooks/hook", json={"pad": "x"})
        assert accepted.status == 202
        assert (await ready(client))[0] == 200
