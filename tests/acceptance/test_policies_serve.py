"""Pack policies through real `hookyard serve` processes (issue 21, "Packs").

- `st2 policy list|get` and `st2 policy-type list|get` (the official CLI) read them;
- two serves on one PostgreSQL database never run more than `threshold` executions of an
  action.concurrency action at once;
- on SQLite, a serve killed with SIGKILL while holding a slot does not keep it: after a
  restart the delayed execution runs.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.packs import write_pack
from tests.support.st2 import INSTALL_TIMEOUT, St2

FIXTURES = Path(__file__).resolve().parents[1] / "support" / "st2_policies"
ENDED = ("succeeded", "failed", "timeout", "abandoned", "canceled")

SLOW = """\
name: slow
runner_type: local-shell-cmd
parameters:
  cmd: {default: "sleep 0.4"}
"""


def _limit(threshold: int) -> str:
    return (
        "name: slow.limit\nresource_ref: lim.slow\npolicy_type: action.concurrency\n"
        f"parameters: {{threshold: {threshold}}}\n"
    )


def _packs(tmp_path: Path, threshold: int) -> Path:
    packs = tmp_path / "packs"
    write_pack(packs, "lim", {"actions/slow.yaml": SLOW, "policies/limit.yaml": _limit(threshold)})
    shutil.copytree(FIXTURES / "hello_st2", packs / "hello_st2")
    return packs


def _api(url: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _run(url: str, action: str, **parameters: Any) -> str:
    return _api(url, "/api/v1/executions", {"action": action, "parameters": parameters})["id"]


def _wait_ended(url: str, ids: list[str], timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = [_api(url, f"/api/v1/executions/{i}") for i in ids]
        if all(e["status"] in ENDED for e in found):
            return found
        assert time.monotonic() < deadline, [(e["id"], e["status"]) for e in found]
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT + 120)
def test_st2_policy_commands(serve, st2_cli, tmp_path):
    server = serve.start(roles="api", args=["--packs", str(_packs(tmp_path, 2))])
    st2 = St2(st2_cli, server.url, None, tmp_path / "home")

    listed = st2.json("policy", "list")
    refs = {p["ref"]: p for p in listed}
    assert set(refs) == {"hello_st2.greet.concurrency", "hello_st2.http.retry", "lim.slow.limit"}
    assert refs["hello_st2.http.retry"] == {
        "ref": "hello_st2.http.retry",
        "resource_ref": "core.http",
        "policy_type": "action.retry",
        "enabled": True,
    }
    table = st2.ok("policy", "list", "--pack", "hello_st2")
    assert "hello_st2.greet.concurrency" in table and "lim.slow.limit" not in table
    by_type = st2.json("policy", "list", "--policy-type", "action.retry")
    assert [p["ref"] for p in by_type] == ["hello_st2.http.retry"]

    got = st2.json("policy", "get", "hello_st2.greet.concurrency")
    assert got["resource_ref"] == "hello_st2.greet"
    assert got["parameters"] == {"threshold": 10, "action": "delay"}
    assert "Limits the concurrent executions" in st2.ok(
        "policy", "get", "hello_st2.greet.concurrency"
    )

    missing = st2("policy", "get", "hello_st2.nope")
    assert missing.returncode == 1 and "not found" in (missing.stdout + missing.stderr)

    types = st2.json("policy-type", "list")
    assert {t["name"] for t in types} == {"retry", "concurrency", "concurrency.attr"}
    retry_type = st2.json("policy-type", "get", "action.retry")
    assert retry_type["parameters"]["retry_on"]["enum"] == ["failure", "timeout"]


def _max_overlap(executions: list[dict]) -> int:
    """The most executions running at one moment, from their start and end times."""
    edges = []
    for execution in executions:
        edges.append((execution["started_at"], 1))
        edges.append((execution["end_timestamp"], -1))
    running = highest = 0
    for _, change in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        running += change
        highest = max(highest, running)
    return highest


@pytest.mark.slow
@pytest.mark.postgres
def test_two_serves_on_one_postgres_never_exceed_the_threshold(serve, pg_database, tmp_path):
    packs = _packs(tmp_path, 2)
    args = ["--packs", str(packs)]
    first = serve.start(store=pg_database, roles="api,actions", args=args, name="first")
    second = serve.start(store=pg_database, roles="api,actions", args=args, name="second")
    ids = [_run((first, second)[i % 2].url, "lim.slow") for i in range(12)]
    done = _wait_ended(first.url, ids)
    assert [e["status"] for e in done] == ["succeeded"] * 12, done
    assert _max_overlap(done) == 2  # the threshold, reached and never passed
    assert any("delayed" in [entry["status"] for entry in e["log"]] for e in done)
    for server in (first, second):
        assert "execution" in server.log_text() and "Traceback" not in server.log_text()


@pytest.mark.slow
def test_a_killed_serve_does_not_keep_its_slot_on_sqlite(serve, tmp_path):
    packs = _packs(tmp_path, 1)
    env = {"HOOKYARD_WORKERS__LEASE_SECONDS": "1", "HOOKYARD_WORKERS__MAX_ATTEMPTS": "1"}
    args = ["--packs", str(packs)]
    server = serve.start(roles="api,actions", args=args, env=env)
    holder = _run(server.url, "lim.slow", cmd="sleep 60")
    deadline = time.monotonic() + 20
    while _api(server.url, f"/api/v1/executions/{holder}")["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    waiter = _run(server.url, "lim.slow", cmd="echo waited")
    while _api(server.url, f"/api/v1/executions/{waiter}")["status"] != "delayed":
        assert time.monotonic() < deadline, _api(server.url, f"/api/v1/executions/{waiter}")
        time.sleep(0.1)
    server.kill()  # SIGKILL: no finish, no release

    again = serve.start(roles="api,actions", args=args, env=env, name="again")
    holder_after, waiter_after = _wait_ended(again.url, [holder, waiter])
    assert holder_after["status"] == "abandoned"
    assert waiter_after["status"] == "succeeded"
    assert waiter_after["result"]["stdout"] == "waited"
