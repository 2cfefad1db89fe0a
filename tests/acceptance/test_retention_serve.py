"""Retention in a real `hookyard serve` (issue 23): the retention role purges finished
trigger instances and executions past their retention while webhooks keep arriving, the
SQLite file gives the space back, and `hookyard purge` and POST /api/v1/purge do the same
by hand."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.app import REPO_ROOT
from tests.support.waiting import wait_for

# A 2 s retention, passes every 0.3 s: the role's work is visible within a test.
FAST_RETENTION = {
    "HOOKYARD_RETENTION__TRIGGER_INSTANCES": "2s",
    "HOOKYARD_RETENTION__EXECUTIONS": "2s",
    "HOOKYARD_RETENTION__INTERVAL": "0.3",
    "HOOKYARD_RETENTION__BATCH": "100",
}


def _request(url: str, method: str = "GET", body=None, key: str | None = None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["St2-Api-Key"] = key
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _post_load(server, count: int, pad: str = "b") -> list[str]:
    ids = []
    for n in range(count):
        status, reply = _request(
            f"{server.url}/webhooks/load", "POST", {"kind": "load", "n": n, "pad": pad}
        )
        assert status == 202, reply
        ids.append(reply["id"])
    return ids


def _count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_the_retention_role_purges_what_is_past_its_retention(serve, tmp_path):
    server = serve.start(roles="api,rules,actions,retention", env=FAST_RETENTION)
    db = tmp_path / "hookyard.db"
    first = _post_load(server, 20)
    # Each webhook's instance, decision and core.noop execution end, then go.
    wait_for(lambda: _count(db, "trigger_instances") == 0, "instances purged", timeout=30)
    wait_for(lambda: _count(db, "executions") == 0, "executions purged", timeout=30)
    assert _count(db, "enforcements") == 0 and _count(db, "rule_evaluations") == 0
    assert _request(f"{server.url}/api/v1/triggerinstances/{first[0]}")[0] == 404

    # Meanwhile and afterwards the server accepts and runs webhooks as before.
    [later] = _post_load(server, 1)
    executed = wait_for(
        lambda: _request(f"{server.url}/api/v1/executions?trigger_instance={later}")[1],
        "the later webhook's execution",
    )
    assert executed[0]["action"]["ref"] == "core.noop"
    metrics = urllib.request.urlopen(f"{server.url}/metrics", timeout=10).read().decode()
    purged = [line for line in metrics.splitlines() if line.startswith("hookyard_purged_total")]
    assert any('kind="trigger_instances"' in line and not line.endswith(" 0.0") for line in purged)


def test_purged_space_goes_back_to_the_file_system(serve, tmp_path):
    server = serve.start(roles="api,rules,actions,retention", env=FAST_RETENTION)
    db = tmp_path / "hookyard.db"
    big = "b" + "x" * 60_000  # ~60 KB a webhook: 300 of them, ~18 MB of pages
    _post_load(server, 300, pad=big)
    grown = wait_for(lambda: os.path.getsize(db) > 10_000_000 and os.path.getsize(db), "growth")
    wait_for(lambda: _count(db, "trigger_instances") == 0, "instances purged", timeout=60)
    # Freed pages leave the file once the WAL is checkpointed into it.
    wait_for(
        lambda: os.path.getsize(db) < grown / 2,
        f"the file to shrink from {grown} bytes",
        timeout=60,
    )


def _hookyard(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKYARD_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_hookyard_purge_on_the_store_and_through_the_api(serve, tmp_path):
    server = serve.start(roles="api,rules,actions", env={"HOOKYARD_AUTH__ENABLED": "true"})
    admin = server.admin_key()
    store = serve.default_store
    ids = []
    for n in range(3):
        status, reply = _request(
            f"{server.url}/webhooks/load", "POST", {"kind": "load", "n": n, "pad": "b"}, admin
        )
        assert status == 202, reply
        ids.append(reply["id"])
    wait_for(
        lambda: all(
            _request(f"{server.url}/api/v1/triggerinstances/{i}", key=admin)[1]["status"]
            == "processed"
            for i in ids
        ),
        "the webhooks decided",
    )
    time.sleep(1.1)  # older than the 1 s given below

    counted = _hookyard("purge", "--store", store, "--kind", "trigger_instances",
                        "--older-than", "1s", "--dry-run", "--json")  # fmt: skip
    assert counted.returncode == 0, counted.stderr
    assert json.loads(counted.stdout) == {"purged": {"trigger_instances": 3}, "dry_run": True}
    assert f"store: {store}" in counted.stderr

    # Through the API: an admin key is needed, the body is checked, then it purges.
    url = f"{server.url}/api/v1/purge"
    observer = _hookyard("apikey", "create", "o", "--role", "observer", "--store", store)
    status, reply = _request(url, "POST", {}, observer.stdout.strip())
    assert status == 403, reply
    status, reply = _request(url, "POST", {"kinds": ["users"]}, admin)
    assert status == 400 and "unknown kind 'users'" in reply["faultstring"]
    status, reply = _request(url, "POST", {"older_than": "soon"}, admin)
    assert status == 400 and "'older_than'" in reply["faultstring"]
    status, reply = _request(url, "POST", {"kinds": ["once_per_keys"]}, admin)
    assert status == 400 and "kept forever" in reply["faultstring"]

    env_url = ["--url", server.url]
    done = subprocess.run(
        [sys.executable, "-m", "engine", "purge", *env_url, "--kind", "trigger_instances",
         "--older-than", "1s", "--json"],
        capture_output=True, text=True, timeout=60,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("HOOKYARD_")},
             "PYTHONPATH": str(REPO_ROOT), "HOOKYARD_API_KEY": admin},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["purged"] == {"trigger_instances": 3}
    assert _request(f"{server.url}/api/v1/triggerinstances/{ids[0]}", key=admin)[0] == 404

    bad = _hookyard("purge", "--store", store, "--older-than", "a while")
    assert bad.returncode == 1 and "--older-than" in bad.stderr and bad.stderr.count("\n") == 1
