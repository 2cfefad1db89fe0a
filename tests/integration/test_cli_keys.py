"""`hookyard key ...` run for real in a subprocess, on the store a config file names."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet


@pytest.fixture
def hookyard(tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text("store:\n  url: sqlite:///state/hookyard.db\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HOOKYARD_")}

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "engine", "key", *args, "--config", str(config)],
            cwd=tmp_path,
            env={**environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=50,
        )

    return run


def test_set_get_list_delete(hookyard, tmp_path):
    made = hookyard("set", "greeting", "hello world")
    assert made.returncode == 0, made.stderr
    assert "hello world" in made.stdout and "st2kv.system" in made.stdout

    got = hookyard("get", "greeting", "--json")
    assert json.loads(got.stdout)["value"] == "hello world"

    assert hookyard("set", "app.url", "https://x.test", "--ttl", "600").returncode == 0
    assert hookyard("set", "nick", "mona", "--scope", "user", "--user", "bob").returncode == 0
    listed = json.loads(hookyard("list", "--json").stdout)
    assert [(i["name"], i["scope"], i["user"]) for i in listed] == [
        ("app.url", "st2kv.system", None),
        ("greeting", "st2kv.system", None),
        ("nick", "st2kv.user", "bob"),
    ]
    assert listed[0]["expire_timestamp"] is not None
    prefixed = json.loads(hookyard("list", "--prefix", "app.", "--json").stdout)
    assert [i["name"] for i in prefixed] == ["app.url"]
    table = hookyard("list").stdout
    assert table.splitlines()[0].split() == [
        "name",
        "value",
        "secret",
        "encrypted",
        "scope",
        "user",
        "expire_timestamp",
    ]

    deleted = hookyard("delete", "greeting")
    assert deleted.returncode == 0 and "greeting" in deleted.stdout
    again = hookyard("delete", "greeting")
    assert again.returncode == 1
    assert again.stderr.strip().count("\n") == 0 and "not found" in again.stderr
    missing = hookyard("get", "greeting")
    assert missing.returncode == 1 and "not found" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_secret_with_a_generated_key_file(hookyard, tmp_path):
    made = hookyard("set", "db_pw", "hunter2", "--secret", "--json")
    assert made.returncode == 0, made.stderr
    assert "generated a datastore encryption key" in made.stderr
    shown = json.loads(made.stdout)
    assert shown["secret"] is True and shown["value"] != "hunter2"
    key_file = tmp_path / "data" / "datastore.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"

    hidden = hookyard("get", "db_pw")
    assert "hunter2" not in hidden.stdout and "generated a datastore" not in hidden.stderr
    revealed = json.loads(hookyard("get", "db_pw", "--decrypt", "--json").stdout)
    assert (revealed["value"], revealed["encrypted"]) == ("hunter2", False)
    assert "hunter2" not in hookyard("list").stdout

    # At rest: the plaintext is in no row of the database.
    with sqlite3.connect(tmp_path / "state" / "hookyard.db") as conn:
        rows = conn.execute("SELECT * FROM kv_pairs").fetchall()
    assert rows and all("hunter2" not in str(value) for row in rows for value in row)


def test_key_from_the_environment_and_one_line_errors(hookyard, tmp_path):
    key = Fernet.generate_key().decode()
    env = {"HOOKYARD_DATASTORE__ENCRYPTION_KEY": key}
    made = hookyard("set", "pw", "s3cret", "--secret", "--json", env=env)
    assert made.returncode == 0, made.stderr
    assert not (tmp_path / "data" / "datastore.key").exists()
    assert Fernet(key.encode()).decrypt(json.loads(made.stdout)["value"].encode()) == b"s3cret"

    # Without the key, reading the plaintext fails in one line that says what to do.
    keyless = hookyard("get", "pw", "--decrypt")
    assert keyless.returncode == 1
    assert keyless.stderr.startswith("error: no datastore encryption key")
    assert len(keyless.stderr.strip().splitlines()) == 1

    bad_ttl = hookyard("set", "x", "y", "--ttl", "0")
    assert bad_ttl.returncode != 0 and "ttl" in bad_ttl.stderr.lower()
    bad_name = hookyard("set", "a/b", "y")
    assert bad_name.returncode == 1 and "'/'" in bad_name.stderr
