"""`st2 execution re-run <id> --tasks ...` (the official CLI) on a real `hookyard serve`:
an ended Orquesta workflow re-run from a task, its earlier tasks' results kept."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.support.rerun_pack import write_rerun_pack
from tests.support.st2 import St2

pytestmark = [pytest.mark.slow]


@pytest.fixture
def st2(serve, st2_cli, tmp_path: Path) -> St2:
    packs = tmp_path / "packs"
    write_rerun_pack(packs)
    server = serve.start(
        roles="api,actions,workflows",
        env={"HOOKYARD_PACKS_DIRS": f"[{packs}]", "HOOKYARD_AUTH__ENABLED": "false"},
    )
    return St2(st2_cli, server.url, None, tmp_path / "home")


def test_st2_execution_re_run_tasks_reruns_the_failed_task(st2: St2, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    failed = st2("run", "reruns.gated", f"flag={flag}")
    assert failed.returncode == 1, failed.stdout
    workflow_id = re.search(r"^id: ([0-9a-f]+)$", failed.stdout, re.MULTILINE).group(1)

    flag.touch()
    again = st2.ok("execution", "re-run", workflow_id, "--tasks", "check")
    assert re.search(r"^status: succeeded", again, re.MULTILINE), again
    assert re.search(r"^\s+three: three$", again, re.MULTILINE), again
    rows = [line for line in again.splitlines() if "core.local" in line]
    assert [row.split("|")[3].strip() for row in rows] == ["check", "last"]

    refused = st2("execution", "re-run", workflow_id, "--tasks", "nope")
    assert refused.returncode != 0
    assert "not found: nope" in refused.stdout + refused.stderr

    # With-items: `--tasks each` resets every item (the CLI's default), `--no-reset` not.
    (tmp_path / "a").touch()
    ran = st2("run", "reruns.gated_items", f"dir={tmp_path}", 'names=["a","b"]')
    items_id = re.search(r"^id: ([0-9a-f]+)$", ran.stdout, re.MULTILINE).group(1)
    (tmp_path / "b").touch()
    only_failed = st2.ok("execution", "re-run", items_id, "--tasks", "each", "--no-reset", "each")
    assert re.search(r"^status: succeeded", only_failed, re.MULTILINE), only_failed
    rerun_id = re.search(r"^id: ([0-9a-f]+)$", only_failed, re.MULTILINE).group(1)
    deadline = time.monotonic() + 10
    while len(children := st2.api(f"/api/v1/executions?parent={rerun_id}")) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert [c["context"]["orquesta"]["item_id"] for c in children] == [1]
