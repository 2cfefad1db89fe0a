"""The official `st2` CLI runs action chains on a real `hookyard serve`: `st2 run` prints
the chain's result and its task table (named from `context.chain.name`), `st2 execution
get` shows the children, `st2 execution cancel` cancels a running chain, `st2 execution
re-run` runs one again whole (re-run from tasks is refused, saying why)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.support.chain_pack import write_chain_pack
from tests.support.st2 import St2

pytestmark = [pytest.mark.slow]


@pytest.fixture
def st2(serve, st2_cli, tmp_path: Path) -> St2:
    packs = tmp_path / "packs"
    write_chain_pack(packs)
    server = serve.start(
        roles="api,actions,workflows",
        env={"HOOKYARD_PACKS_DIRS": f"[{packs}]", "HOOKYARD_AUTH__ENABLED": "false"},
    )
    return St2(st2_cli, server.url, None, tmp_path / "home")


def task_rows(output: str) -> list[list[str]]:
    rows = [line for line in output.splitlines() if "core.local" in line]
    return [[cell.strip() for cell in row.split("|")] for row in rows]


def test_st2_run_shows_the_chain_and_its_links(st2: St2) -> None:
    ran = st2.ok("run", "chains.echochain-param", "input1=foo")
    assert re.search(r"^status: succeeded", ran, re.MULTILINE), ran
    rows = task_rows(ran)
    assert [row[3] for row in rows] == ["c1", "c2", "c3"], ran
    assert all("succeeded" in row[2] for row in rows), ran

    chain_id = re.search(r"^id: ([0-9a-f]+)$", ran, re.MULTILINE).group(1)
    assert f"+ {chain_id}" in st2.ok("execution", "list")
    got = st2.ok("execution", "get", chain_id)
    assert [row[3] for row in task_rows(got)] == ["c1", "c2", "c3"], got

    failed = st2("run", "chains.task_failure")
    assert failed.returncode == 1, failed.stdout
    assert [row[3] for row in task_rows(failed.stdout)] == ["c1", "c2"], failed.stdout
    assert "all aboard the fail boat" in failed.stdout


def test_st2_execution_cancel_cancels_a_running_chain(st2: St2, tmp_path: Path) -> None:
    marker = tmp_path / "hold"
    marker.write_text("")
    started = st2.ok("run", "chains.waiting", f"tempfile={marker}", "-a")
    chain_id = re.search(r"st2 execution get ([0-9a-f]+)", started).group(1)
    deadline = time.monotonic() + 20
    while not st2.api(f"/api/v1/executions?parent={chain_id}"):
        assert time.monotonic() < deadline, "the first link never started"
        time.sleep(0.1)
    assert chain_id in st2.ok("execution", "cancel", chain_id)
    while st2.api(f"/api/v1/executions/{chain_id}")["status"] != "canceled":
        assert time.monotonic() < deadline, "the chain was never canceled"
        time.sleep(0.1)
    [link] = st2.api(f"/api/v1/executions?parent={chain_id}")
    assert link["status"] == "canceled"


def test_st2_execution_pause_and_resume_a_chain(st2: St2, tmp_path: Path) -> None:
    marker = tmp_path / "hold"
    marker.write_text("")
    started = st2.ok(
        "run", "chains.chain-test-pause-resume", f"tempfile={marker}", "message=back", "-a"
    )
    chain_id = re.search(r"st2 execution get ([0-9a-f]+)", started).group(1)
    deadline = time.monotonic() + 20

    def status() -> str:
        return st2.api(f"/api/v1/executions/{chain_id}")["status"]

    while not st2.api(f"/api/v1/executions?parent={chain_id}"):
        assert time.monotonic() < deadline, "the first link never started"
        time.sleep(0.1)
    assert "pausing" in st2.ok("execution", "pause", chain_id)
    marker.unlink()
    while status() != "paused":
        assert time.monotonic() < deadline, "never paused"
        time.sleep(0.05)
    assert len(st2.api(f"/api/v1/executions?parent={chain_id}")) == 1
    assert "resuming" in st2.ok("execution", "resume", chain_id)
    while status() != "succeeded":
        assert time.monotonic() < deadline + 10, "never finished"
        time.sleep(0.1)
    got = st2.ok("execution", "get", chain_id)
    assert [row[3] for row in task_rows(got)] == ["task1", "task2"], got


def test_st2_execution_re_run_runs_a_chain_again_and_refuses_tasks(st2: St2) -> None:
    first = st2.ok("run", "chains.echochain-param", "input1=one")
    chain_id = re.search(r"^id: ([0-9a-f]+)$", first, re.MULTILINE).group(1)

    again = st2.ok("execution", "re-run", chain_id, "input1=two")
    assert re.search(r"^status: succeeded", again, re.MULTILINE), again
    rerun_id = re.search(r"^id: ([0-9a-f]+)$", again, re.MULTILINE).group(1)
    assert rerun_id != chain_id
    assert [row[3] for row in task_rows(again)] == ["c1", "c2", "c3"], again
    rerun = st2.api(f"/api/v1/executions/{rerun_id}")
    assert rerun["parameters"] == {"input1": "two"}
    assert rerun["context"]["re-run"] == {"ref": chain_id}
    assert [t["result"]["stdout"] for t in rerun["result"]["tasks"]] == [
        "c1, input two",
        "c2 c1, input two",
        "c3 c2 c1, input two",
    ]
    # The links are the new execution's own children; the first run keeps its three.
    assert len(st2.api(f"/api/v1/executions?parent={rerun_id}")) == 3
    assert len(st2.api(f"/api/v1/executions?parent={chain_id}")) == 3

    # The same parameters when none are given.
    same = st2.ok("execution", "re-run", chain_id)
    assert re.search(r"^status: succeeded", same, re.MULTILINE), same
    assert "c3 c2 c1, input one" in same

    refused = st2("execution", "re-run", chain_id, "--tasks", "c2")
    assert refused.returncode != 0, refused.stdout
    said = refused.stdout + refused.stderr
    assert "Task option is only supported for Orquesta workflows" in said, said
    assert "action-chain runner" in said and "re-run whole (without tasks)" in said, said
    assert "Traceback" not in said
