"""`hookyard action list|get` and `hookyard pack list|get` against a real serve (issue 21)."""

from __future__ import annotations

import pytest

from tests.support.cli import start_client


@pytest.fixture(scope="module")
def hookyard_cli(module_serve):
    """One server for the module: these commands only read what it loaded."""
    return start_client(module_serve)


def test_action_list_and_get(hookyard_cli):
    listed = hookyard_cli.json("action", "list")
    refs = {a["ref"]: a["runner_type"] for a in listed}
    assert refs["core.local"] == "local-shell-cmd" and refs["core.noop"] == "noop"

    core_only = hookyard_cli.json("action", "list", "--pack", "core")
    assert core_only and {a["pack"] for a in core_only} == {"core"}

    table = hookyard_cli.ok("action", "list", "--pack", "core")
    line = next(row for row in table.splitlines() if row.startswith("core.local "))
    assert "local-shell-cmd" in line

    shown = hookyard_cli.ok("action", "get", "core.local")
    rows = {row.split()[0]: row.split() for row in shown.splitlines() if row.strip()}
    assert rows["runner_type:"][1] == "local-shell-cmd"
    # The action's own parameter and the runner's, each with its origin.
    assert rows["cmd"][1:3] == ["string", "yes"] and "action" in rows["cmd"]
    assert "runner" in rows["timeout"] and rows["timeout"][1] == "integer"


def test_unknown_action_and_pack_are_one_line_errors(hookyard_cli):
    for args in (("action", "get", "core.nope"), ("pack", "get", "nope")):
        result = hookyard_cli(*args)
        assert result.returncode == 1, result.stdout
        assert result.stderr.count("\n") == 1 and "nope" in result.stderr
        assert "Traceback" not in result.stderr


def test_pack_list_and_get(hookyard_cli):
    packs = {p["ref"] for p in hookyard_cli.json("pack", "list")}
    assert "core" in packs
    table = hookyard_cli.ok("pack", "list")
    core_line = next(row for row in table.splitlines() if row.startswith("core "))
    core_actions = len(hookyard_cli.json("action", "list", "--pack", "core"))
    assert f" {core_actions} " in core_line

    shown = hookyard_cli.ok("pack", "get", "core")
    assert shown.splitlines()[0].split() == ["ref:", "core"]
    actions_line = next(row for row in shown.splitlines() if row.startswith("actions:"))
    assert "local" in actions_line and "noop" in actions_line
