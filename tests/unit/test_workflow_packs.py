"""Packs with Orquesta workflows: the workflow file is read and checked at load; a broken
one is reported with file:line and stays loaded so that running it says why."""

from __future__ import annotations

from pathlib import Path

from engine.packs.loader import load_packs
from engine.runners import default_runners
from engine.workflows.spec import WorkflowSpec
from tests.support.workflow_pack import write_workflow_pack


def test_orquesta_actions_load_with_their_workflow_and_a_broken_one_is_reported(
    tmp_path: Path,
) -> None:
    write_workflow_pack(tmp_path)
    packs, errors = load_packs([tmp_path], runners=default_runners())
    noop10 = packs.action("flows.noop10")
    assert noop10.runner_type == "orquesta" and noop10.broken is None
    assert isinstance(noop10.workflow, WorkflowSpec) and len(noop10.workflow.tasks) == 10
    assert packs.action("flows.plain").runner_type == "noop"

    broken = packs.action("flows.broken")
    assert broken.workflow is None
    workflow_file = str(tmp_path / "flows" / "actions" / "workflows" / "broken.yaml")
    assert broken.broken is not None and f"{workflow_file}:6:" in broken.broken
    assert "nowhere" in broken.broken
    [error] = errors
    assert "flows.broken" in str(error) and f"{workflow_file}:6:" in str(error)
    assert str(error).startswith(str(tmp_path / "flows" / "actions" / "broken.yaml"))


def test_an_orquesta_action_needs_its_entry_point(tmp_path: Path) -> None:
    pack = write_workflow_pack(tmp_path)
    (pack / "actions" / "nofile.yaml").write_text("name: nofile\nrunner_type: orquesta\n")
    packs, errors = load_packs([tmp_path], runners=default_runners())
    assert any("set entry_point" in str(error) for error in errors)
    assert "nofile" not in packs.packs["flows"].actions
