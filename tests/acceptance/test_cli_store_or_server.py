"""`hookyard key` and `hookyard apikey` act on the server HOOKYARD_URL names, through its API,
or — without a URL — on the store the config names, saying which (issue 21): with
`serve --store X` running, a key set with HOOKYARD_URL lands in X, not in the database of
a config.yaml that happens to sit in the working folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.app import REPO_ROOT
from tests.support.cli import start_server


def _hookyard(cwd: Path, *args: str, url: str | None = None, key: str | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKYARD_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    if url:
        env["HOOKYARD_URL"] = url
    if key:
        env["HOOKYARD_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _get(url: str, key: str) -> tuple[int, object]:
    request = urllib.request.Request(url, headers={"St2-Api-Key": key})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _elsewhere(tmp_path: Path) -> Path:
    """A working folder whose config.yaml names another database than the server's."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "config.yaml").write_text("store:\n  url: sqlite:///other.db\n")
    return folder


def test_key_commands_with_a_url_reach_the_servers_store(serve, tmp_path):
    server, admin = start_server(serve)
    folder = _elsewhere(tmp_path)

    made = _hookyard(folder, "key", "set", "greeting", "hello", url=server.url, key=admin)
    assert made.returncode == 0, made.stderr
    assert "store:" not in made.stderr
    status, shown = _get(server.url + "/api/v1/keys/greeting", admin)
    assert status == 200 and shown["value"] == "hello"
    assert not (folder / "other.db").exists()

    listed = _hookyard(folder, "key", "list", "--json", url=server.url, key=admin)
    assert [k["name"] for k in json.loads(listed.stdout)] == ["greeting"]
    got = _hookyard(folder, "key", "get", "greeting", "--json", url=server.url, key=admin)
    assert json.loads(got.stdout)["value"] == "hello"

    assert _hookyard(folder, "key", "delete", "greeting", url=server.url, key=admin).returncode == 0
    assert _get(server.url + "/api/v1/keys/greeting", admin)[0] == 404
    again = _hookyard(folder, "key", "delete", "greeting", url=server.url, key=admin)
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1 and "not found" in again.stderr

    # Without the URL the same command writes to the config's store, and says so.
    local = _hookyard(folder, "key", "set", "greeting", "local")
    assert local.returncode == 0, local.stderr
    assert f"store: sqlite:///{folder / 'other.db'}" in local.stderr
    assert _get(server.url + "/api/v1/keys/greeting", admin)[0] == 404

    # Both at once is ambiguous: refused, nothing written.
    both = _hookyard(
        folder, "key", "set", "x", "1", "--store", "sqlite:///y.db", url=server.url, key=admin
    )
    assert both.returncode == 1 and "not both" in both.stderr
    assert not (folder / "y.db").exists()


def test_apikey_commands_with_a_url_manage_the_servers_keys(serve, tmp_path):
    server, admin = start_server(serve)
    folder = _elsewhere(tmp_path)

    made = _hookyard(folder, "apikey", "create", "reader", "--role", "observer",
                     "--expires-in", "1h", url=server.url, key=admin)  # fmt: skip
    assert made.returncode == 0, made.stderr
    reader = made.stdout.strip()
    assert reader.startswith("hy_") and "role observer" in made.stderr
    assert _get(server.url + "/api/v1/executions", reader)[0] == 200

    listed = json.loads(
        _hookyard(folder, "apikey", "list", "--json", url=server.url, key=admin).stdout
    )
    record = next(k for k in listed if k["name"] == "reader")
    assert record["role"] == "observer" and record["expires_at"] is not None

    extended = _hookyard(folder, "apikey", "extend", record["id"], "--by", "30d",
                         url=server.url, key=admin)  # fmt: skip
    assert extended.returncode == 0, extended.stderr
    assert record["expires_at"] not in extended.stdout

    disabled = _hookyard(folder, "apikey", "disable", record["id"], url=server.url, key=admin)
    assert disabled.returncode == 0 and "disabled" in disabled.stdout
    assert _get(server.url + "/api/v1/executions", reader)[0] in (401, 403)

    deleted = _hookyard(folder, "apikey", "delete", record["id"], "nope",
                        url=server.url, key=admin)  # fmt: skip
    assert f"deleted {record['id']}" in deleted.stdout
    assert deleted.returncode == 1 and "no API key with id nope" in deleted.stderr
    assert not (folder / "other.db").exists()

    # A key that is not an admin's cannot manage keys: the server's refusal, one line.
    refused = _hookyard(folder, "apikey", "list", url=server.url, key=admin[:-2] + "xx")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
