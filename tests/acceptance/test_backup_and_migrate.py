"""`hookyard backup`, `restore` and `migrate` on real stores (issue 23): a populated SQLite
deployment backed up while it serves, moved to PostgreSQL and restored from backups, and
every copy answers the API's lists exactly as the original did."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support.app import REPO_ROOT
from tests.support.waiting import wait_for

LISTS = (
    "/api/v1/triggerinstances?limit=-1",
    "/api/v1/executions?limit=-1",
    "/api/v1/ruleenforcements?limit=-1",
    "/api/v1/keys?limit=-1",
)


def _hookyard(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKYARD_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _post(url: str, body) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _lists(server) -> dict[str, list]:
    return {path: _get(server.url + path) for path in LISTS}


def _populate(server, count: int = 12) -> None:
    for n in range(count):
        _post(f"{server.url}/webhooks/load", {"kind": "load", "n": n, "pad": "b"})

    def ended() -> bool:
        executions = _get(f"{server.url}/api/v1/executions?limit=-1")
        return len([e for e in executions if e["status"] in ("succeeded", "failed")]) == count

    wait_for(ended, "every execution to end", timeout=60)


@pytest.mark.timeout(240)  # five servers and four copies
async def test_a_deployment_moves_to_postgresql_and_back_with_nothing_lost(
    serve, tmp_path, pg_database
):
    original = serve.start(roles="api,rules,actions", name="original")
    _populate(original)
    assert _hookyard("key", "set", "region", "eu", "--store", serve.default_store).returncode == 0
    # Online: the backup is taken while the original serves.
    backup = tmp_path / "backup.db"
    made = _hookyard("backup", str(backup), "--store", serve.default_store)
    assert made.returncode == 0, made.stderr
    expected = _lists(original)
    assert len(expected[LISTS[0]]) == 12 and len(expected[LISTS[3]]) == 1
    original.terminate()

    moved = await asyncio.to_thread(
        _hookyard, "migrate", "--to", pg_database, "--store", serve.default_store
    )
    assert moved.returncode == 0, moved.stderr
    table = {line.split()[0]: line.split()[1] for line in moved.stdout.splitlines()[2:]}
    assert table["trigger_instances"] == "12" and table["executions"] == "12"
    on_pg = serve.start(roles="api", store=pg_database, name="on_pg")
    assert _lists(on_pg) == expected
    on_pg.terminate()

    # The backup restores into a new SQLite file and answers the same.
    restored_db = f"sqlite:///{tmp_path / 'restored.db'}"
    restored = _hookyard("restore", str(backup), "--store", restored_db)
    assert restored.returncode == 0, restored.stderr
    from_backup = serve.start(roles="api", store=restored_db, name="from_backup")
    assert _lists(from_backup) == expected
    from_backup.terminate()

    # A backup of the PostgreSQL store is an SQLite file too, and restores alike.
    pg_backup = tmp_path / "pg-backup.db"
    made = await asyncio.to_thread(_hookyard, "backup", str(pg_backup), "--store", pg_database)
    assert made.returncode == 0, made.stderr
    round_trip = f"sqlite:///{tmp_path / 'round-trip.db'}"
    assert _hookyard("restore", str(pg_backup), "--store", round_trip).returncode == 0
    again = serve.start(roles="api", store=round_trip, name="round_trip")
    assert _lists(again) == expected


def test_copies_refuse_what_would_lose_or_merge_data(serve, tmp_path):
    server = serve.start(roles="api,rules,actions")
    _populate(server, 2)
    server.terminate()
    store = serve.default_store
    backup = tmp_path / "b.db"
    assert _hookyard("backup", str(backup), "--store", store).returncode == 0

    # Never over an existing file, never into a store that holds records.
    again = _hookyard("backup", str(backup), "--store", store)
    assert again.returncode == 1 and "exists already" in again.stderr
    into_full = _hookyard("restore", str(backup), "--store", store)
    assert into_full.returncode == 1 and "not empty" in into_full.stderr
    with sqlite3.connect(tmp_path / "hookyard.db") as conn:
        assert conn.execute("SELECT count(*) FROM trigger_instances").fetchone()[0] == 2

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    refused = _hookyard("restore", str(garbage), "--store", f"sqlite:///{tmp_path / 'n.db'}")
    assert refused.returncode == 1 and refused.stderr.startswith("error:")
    assert "Traceback" not in refused.stderr
