"""The real `hookyard workflow inspect` CLI in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.workflows import FAIL_INSPECTION

ROOT = Path(__file__).parents[2]


def hookyard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_prints_every_problem_and_exits_like_rule_validate(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(FAIL_INSPECTION)
    good = tmp_path / "good.yaml"
    good.write_text("version: 1.0\ntasks:\n  t:\n    action: core.noop\n")
    result = hookyard("workflow", "inspect", str(bad), str(good), str(tmp_path / "none.yaml"))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert (
        lines[0] == f"{bad}:18:9: tasks.task2.input: must be a mapping of input names, not a list"
    )
    assert lines[3] == f"{tmp_path / 'none.yaml'}: cannot read the file: No such file or directory"
    assert lines[-1] == "4 problem(s) in 3 file(s)"
    as_json = hookyard("workflow", "inspect", "--json", str(bad))
    assert as_json.returncode == 1
    assert [p["type"] for p in json.loads(as_json.stdout)["problems"]] == [
        "syntax",
        "expression",
        "context",
    ]
    clean = hookyard("workflow", "inspect", str(good))
    assert (clean.returncode, clean.stdout) == (0, "ok: 1 workflow file(s)\n")
