"""Packs with action chains: the chain file is read and checked at load; a broken one is
reported with file:line and stays loaded so that running it says why, while the pack's
other actions load."""

from __future__ import annotations

from pathlib import Path

from engine.packs.loader import load_packs
from engine.runners import default_runners
from engine.workflows.chain_spec import ChainSpec
from tests.support.chain_pack import write_chain_pack


def test_chain_actions_load_with_their_chain_and_broken_ones_are_reported(
    tmp_path: Path,
) -> None:
    write_chain_pack(tmp_path)
    packs, errors = load_packs([tmp_path], runners=default_runners())
    echochain = packs.action("chains.echochain")
    assert echochain.runner_type == "action-chain" and echochain.broken is None
    assert isinstance(echochain.workflow, ChainSpec)
    assert [link.name for link in echochain.workflow.links] == ["c1", "c2", "c3", "c4"]
    # StackStorm's runner parameters, with the example's own default for skip_notify.
    assert echochain.parameters["display_published"]["default"] is True
    assert echochain.parameters["skip_notify"]["default"] == ["c2"]
    assert packs.action("chains.calls_chain").runner_type == "orquesta"

    broken = packs.action("chains.broken")
    chain_file = str(tmp_path / "chains" / "actions" / "chains" / "broken.yaml")
    assert broken.workflow is None
    assert f"{chain_file}:2: " in broken.broken and '"nowhere"' in broken.broken
    assert f"{chain_file}:5: " in broken.broken and "given twice" in broken.broken
    reported = {str(error).split(":", 1)[0] for error in errors}
    assert reported == {
        str(tmp_path / "chains" / "actions" / f"{name}.meta.yaml")
        for name in ("broken", "echochain_task_failure", "echochain_top_level_failure")
    }
    assert any(f"{chain_file}:2: " in str(error) for error in errors)
    assert "chains.broken' cannot run: its chain has problems" in "\n".join(map(str, errors))


def test_an_action_chain_needs_its_entry_point(tmp_path: Path) -> None:
    pack = write_chain_pack(tmp_path)
    (pack / "actions" / "nofile.yaml").write_text("name: nofile\nrunner_type: action-chain\n")
    packs, errors = load_packs([tmp_path], runners=default_runners())
    assert any("set entry_point" in str(error) for error in errors)
    assert "nofile" not in packs.packs["chains"].actions
    assert "echochain" in packs.packs["chains"].actions
