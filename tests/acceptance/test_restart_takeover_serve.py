"""A `hookyard serve` killed with -9 and started again picks its own work up at once
(engine.workers.claimers), not when the dead process's leases run out.

The lease is 120 s here: an execution that runs again well within it was taken over.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.waiting import wait_for

LONG_LEASE = {"HOOKYARD_WORKERS__LEASE_SECONDS": "120", "HOOKYARD_WORKERS__MAX_ATTEMPTS": "3"}


def create_execution(url: str, cmd: str) -> str:
    request = urllib.request.Request(
        url + "/api/v1/executions",
        data=json.dumps({"action": "core.local", "parameters": {"cmd": cmd}}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["id"]


def get_execution(url: str, execution_id: str) -> dict:
    with urllib.request.urlopen(f"{url}/api/v1/executions/{execution_id}", timeout=10) as r:
        return json.load(r)


@pytest.mark.timeout(120)
def test_a_restarted_serve_runs_its_killed_execution_again_at_once(serve, tmp_path: Path):
    counter = tmp_path / "counter"
    cmd = f"echo start >> {counter}; sleep 2; echo done >> {counter}"
    first = serve.start(roles="api,actions", env=LONG_LEASE)
    execution_id = create_execution(first.url, cmd)
    wait_for(lambda: counter.exists() and counter.read_text().strip(), "attempt 1 to start", 20)
    assert first.kill() == -9

    restarted_at = time.monotonic()
    second = serve.start(roles="api,actions", env=LONG_LEASE)
    done = wait_for(
        lambda: (e := get_execution(second.url, execution_id))["status"] == "succeeded" and e,
        "attempt 2 to succeed",
        60,
    )
    # Within the 120 s lease: taken over, not expired. Attempt 1 never finished.
    assert time.monotonic() - restarted_at < 60
    assert done["attempt"] == 2
    assert counter.read_text().splitlines() == ["start", "start", "done"]
