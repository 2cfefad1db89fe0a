"""The official `st2` CLI runs Orquesta workflows on a real `hookyard serve`: `st2 run`
prints the workflow's result and its task table, `st2 execution list` marks workflows
with children, `st2 execution cancel` cancels a running workflow."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.support.app import REPO_ROOT
from tests.support.st2 import St2
from tests.support.workflow_pack import write_workflow_pack

pytestmark = [pytest.mark.slow]

ST2_EXAMPLES = REPO_ROOT / "tests" / "support" / "st2_examples"


@pytest.fixture
def st2(serve, st2_cli, tmp_path: Path) -> St2:
    packs = tmp_path / "packs"
    write_workflow_pack(packs)
    server = serve.start(
        roles="api,actions,workflows",
        env={"HOOKYARD_PACKS_DIRS": f"[{packs}]", "HOOKYARD_AUTH__ENABLED": "false"},
    )
    return St2(st2_cli, server.url, None, tmp_path / "home")


def test_st2_run_shows_the_output_and_the_tasks(st2: St2) -> None:
    ran = st2.ok("run", "flows.echo", "name=mona")
    assert re.search(r"^status: succeeded", ran, re.MULTILINE), ran
    assert re.search(r"^\s+said: hello mona$", ran, re.MULTILINE), ran
    rows = [line for line in ran.splitlines() if "core.local" in line]
    assert [row.split("|")[3].strip() for row in rows] == ["greet", "shout"]
    assert all("succeeded" in row for row in rows)

    workflow_id = re.search(r"^id: ([0-9a-f]+)$", ran, re.MULTILINE).group(1)
    listed = st2.ok("execution", "list")
    assert f"+ {workflow_id}" in listed, listed
    got = st2.ok("execution", "get", workflow_id)
    assert "greet" in got and "shout" in got

    failed = st2("run", "flows.failing")
    assert failed.returncode == 1, failed.stdout
    assert "task_id: boom" in failed.stdout and "reached: false" in failed.stdout


def test_st2_execution_cancel_cancels_a_running_workflow(st2: St2) -> None:
    started = st2.ok("run", "flows.two_sleeps", "-a")
    workflow_id = re.search(r"st2 execution get ([0-9a-f]+)", started).group(1)
    deadline = time.monotonic() + 20
    while len(st2.api(f"/api/v1/executions?parent={workflow_id}")) < 2:
        assert time.monotonic() < deadline, "the tasks never started"
        time.sleep(0.1)
    out = st2.ok("execution", "cancel", workflow_id)
    assert workflow_id in out
    while st2.api(f"/api/v1/executions/{workflow_id}")["status"] != "canceled":
        assert time.monotonic() < deadline, "the workflow was never canceled"
        time.sleep(0.1)
    children = st2.api(f"/api/v1/executions?parent={workflow_id}")
    assert {child["status"] for child in children} == {"canceled"}


def test_st2_execution_pause_and_resume(st2: St2) -> None:
    started = st2.ok("run", "flows.slow8", "-a")
    workflow_id = re.search(r"st2 execution get ([0-9a-f]+)", started).group(1)
    deadline = time.monotonic() + 20

    def status() -> str:
        return st2.api(f"/api/v1/executions/{workflow_id}")["status"]

    while status() != "running":
        assert time.monotonic() < deadline, "never running"
        time.sleep(0.05)
    assert "pausing" in st2.ok("execution", "pause", workflow_id)
    while status() != "paused":
        assert time.monotonic() < deadline, "never paused"
        time.sleep(0.05)
    assert "resuming" in st2.ok("execution", "resume", workflow_id)
    while status() != "succeeded":
        assert time.monotonic() < deadline + 10, "never finished"
        time.sleep(0.1)
    assert len(st2.api(f"/api/v1/executions?parent={workflow_id}")) == 8


def test_st2_execution_re_run_runs_the_workflow_again(st2: St2) -> None:
    ran = st2.ok("run", "flows.echo", "name=mona")
    workflow_id = re.search(r"^id: ([0-9a-f]+)$", ran, re.MULTILINE).group(1)
    again = st2.ok("execution", "re-run", workflow_id, "name=lisa")
    assert re.search(r"^\s+said: hello lisa$", again, re.MULTILINE), again


def test_st2_runs_stackstorms_examples_pack_unchanged(serve, st2_cli, tmp_path: Path) -> None:
    """`st2 run examples.orquesta-sequential name=x` on StackStorm's own examples pack,
    copied unchanged (tests/support/st2_examples); `st2 execution get` shows the tasks,
    a subworkflow's indented under it in the order they ran."""
    server = serve.start(
        roles="api,actions,workflows",
        env={"HOOKYARD_PACKS_DIRS": f"[{ST2_EXAMPLES}]", "HOOKYARD_AUTH__ENABLED": "false"},
    )
    st2 = St2(st2_cli, server.url, None, tmp_path / "home")

    ran = st2.ok("run", "examples.orquesta-sequential", "name=x")
    assert re.search(r"^status: succeeded", ran, re.MULTILINE), ran
    assert re.search(r"^\s+greeting: x, All your base are belong to us!$", ran, re.MULTILINE)
    workflow_id = re.search(r"^id: ([0-9a-f]+)$", ran, re.MULTILINE).group(1)
    got = st2.ok("execution", "get", workflow_id)
    rows = [line.split("|") for line in got.splitlines() if "core.echo" in line]
    assert [(row[2].split()[0], row[3].strip()) for row in rows] == [
        ("succeeded", "task1"),
        ("succeeded", "task2"),
        ("succeeded", "task3"),
    ], got

    nested = st2.ok("run", "examples.orquesta-subworkflow")
    assert re.search(r"^status: succeeded", nested, re.MULTILINE), nested
    tasks = [
        (len(row[1]) - len(row[1].lstrip()), row[3].strip())
        for row in (line.split("|") for line in nested.splitlines())
        if len(row) > 4 and row[3].strip() in ("start", "subworkflow", "task1", "task3", "finish")
    ]
    assert [name for _, name in tasks] == ["start", "subworkflow", "task1", "task3", "finish"]
    indent = dict((name, spaces) for spaces, name in tasks)
    assert indent["task1"] > indent["start"] and indent["finish"] == indent["start"]
