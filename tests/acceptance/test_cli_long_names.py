"""Names over their bound refused by the real CLI (issue 15 item 9): one line on stderr,
naming the field and the limit, and a non-zero exit; nothing stored."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def hookyard(tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text("store:\n  url: sqlite:///state/hookyard.db\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HOOKYARD_")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "engine", *args],
            cwd=tmp_path,
            env={**environ, "HOOKYARD_CONFIG": str(config)},
            capture_output=True,
            text=True,
            timeout=50,
        )

    return run


def test_apikey_create_refuses_a_long_name(hookyard):
    refused = hookyard("apikey", "create", "k" * 256)
    assert refused.returncode != 0 and refused.stdout == ""
    assert "'name' is 256 characters long; the limit is 255 characters" in refused.stderr
    listed = hookyard("apikey", "list", "--json")
    assert "k" * 256 not in listed.stdout


def test_key_set_refuses_a_long_name(hookyard):
    refused = hookyard("key", "set", "k" * 513, "value")
    assert refused.returncode != 0
    assert "datastore key name is 513 characters long; the limit is 512" in refused.stderr
    assert hookyard("key", "set", "k" * 512, "value").returncode == 0


def test_rule_validate_names_the_file_line_and_limit(hookyard, tmp_path):
    rule = tmp_path / "long.yaml"
    rule.write_text(
        f"name: {'a' * 100_000}\n"
        "trigger: {type: core.st2.webhook, parameters: {url: x}}\n"
        "action: {ref: core.noop}\n"
    )
    refused = hookyard("rule", "validate", str(rule))
    assert refused.returncode == 1
    assert f"{rule}:1:7: name is 100,000 characters long; the limit is 255" in refused.stderr
    assert len(refused.stderr) < 1000
