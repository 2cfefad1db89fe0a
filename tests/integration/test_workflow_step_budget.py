"""A webhook sender cannot stall or bloat the engine through a workflow's expressions:
each workflow step runs in a child process whose budget the parent enforces
(engine.workers.step_pool). Real app on a real SQLite file, real webhooks, real rules,
real step processes."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import time
from pathlib import Path

from engine.config import WorkerSettings
from engine.http.context import RUNTIME
from tests.support.abuse_workflows import abuse_rules, write_abuse_pack
from tests.support.app import FAST_POLL, app_client, settings_for
from tests.support.waiting import wait_execution, wait_processed, wait_until

# Sorting a list of this many characters (a body within the default ingest.max_body)
# takes seconds on this machine (C-level, in one
# filter call): far past the budgets below.
BIG = "ab" * 500_000


def _settings(tmp_path: Path, **workers):
    write_abuse_pack(tmp_path / "packs")
    fields = {"poll_interval": FAST_POLL, "rules_eval_timeout": 30.0, **workers}
    return settings_for(
        tmp_path,
        rules=abuse_rules(),
        packs=[tmp_path / "packs"],
        roles=("api", "rules", "actions", "workflows"),
        workers=WorkerSettings(**fields),
    )


async def _fire(client, hook: str, **body) -> dict:
    """The workflow a webhook to `hook` started, once it ended."""
    # A large body goes as a stream (aiohttp warns about one sent as bytes).
    data = io.BytesIO(json.dumps(body).encode())
    headers = {"Content-Type": "application/json"}
    reply = await client.post(f"/webhooks/{hook}", data=data, headers=headers)
    assert reply.status == 202, await reply.text()
    instance = await wait_processed(client, (await reply.json())["id"], timeout=60)
    assert instance["status"] == "processed"
    return await wait_execution(
        client, trigger_instance=instance["id"], timeout=60, statuses=("succeeded", "failed")
    )


def _step_pids(client) -> list[int]:
    return list(client.app[RUNTIME].workflow_steps.pids)


def _message(workflow: dict) -> str:
    """Every error of a failed workflow (Orquesta's list) or chain, in one text."""
    result = workflow["result"]
    if "errors" in result:
        return "\n".join(error["message"] for error in result["errors"])
    return result["error"]


async def test_a_c_level_blowup_past_the_budget_fails_its_workflow_and_nothing_else(tmp_path):
    settings = _settings(tmp_path, workflow_step_timeout=1.0, workflow_step_memory_mb=0)
    async with app_client(settings) as client:
        before = _step_pids(client)
        started = time.monotonic()
        slow = asyncio.create_task(_fire(client, "sorter", s=BIG))
        # While the step process is busy, webhooks are accepted and answered at once.
        await asyncio.sleep(0.3)
        for _ in range(5):
            asked = time.monotonic()
            reply = await client.post("/webhooks/quick", json={"s": "abc"})
            assert reply.status == 202
            assert time.monotonic() - asked < 0.5
        workflow = await slow
        assert workflow["status"] == "failed"
        message = _message(workflow)
        assert "exceeded its budget of 1 s (workers.workflow_step_timeout)" in message
        assert 'task "first"' in message and "| sort |" in message
        assert time.monotonic() - started < 20
        # The quick workflows all finished, on a new step process: the old one is gone.
        quick = await client.get("/api/v1/executions", params={"action": "abuse.quick"})
        listed = await quick.json()
        assert len(listed) == 5
        for run in listed:
            done = await wait_execution(client, run["id"], timeout=60)
            assert done["status"] == "succeeded"
            assert done["result"]["output"] == {"computed": 3}
        assert _step_pids(client) and _step_pids(client) != before
        assert not any(_alive(pid) for pid in before)


async def test_an_action_chain_template_is_under_the_same_budget(tmp_path):
    settings = _settings(tmp_path, workflow_step_timeout=1.0, workflow_step_memory_mb=0)
    async with app_client(settings) as client:
        chain = await _fire(client, "chain_sorter", s=BIG)
        assert chain["status"] == "failed"
        message = _message(chain)
        assert "exceeded its budget of 1 s" in message
        assert 'action parameter "message" of task "only"' in message
        fine = await _fire(client, "chain_sorter", s="cab")
        assert fine["status"] == "succeeded", fine["result"]["tasks"][0]["result"]
        (link,) = fine["result"]["tasks"]
        assert link["state"] == "succeeded"
        assert link["result"]["stdout"].strip() == "abc"


async def test_a_step_past_its_memory_limit_fails_its_workflow(tmp_path):
    settings = _settings(tmp_path, workflow_step_timeout=30.0, workflow_step_memory_mb=150)
    async with app_client(settings) as client:
        before = _step_pids(client)
        workflow = await _fire(client, "sorter", s=BIG)
        assert workflow["status"] == "failed"
        message = _message(workflow)
        assert "exceeded its memory limit of 150 MiB (workers.workflow_step_memory_mb)" in (
            message
        ), workflow["result"]
        assert 'task "first"' in message
        # This process never grew: the step ran in the child, which is replaced.
        assert _rss_mib(os.getpid()) < 1024
        quick = await _fire(client, "quick", s="abcd")
        assert quick["status"] == "succeeded"
        assert quick["result"]["output"] == {"computed": 4}
        assert _step_pids(client) != before
        assert not any(_alive(pid) for pid in before)


async def test_a_step_process_killed_from_outside_is_tried_once_more(tmp_path):
    """Not the step's doing (the OOM killer, an operator's kill -9): a new process runs
    the step again and the workflow goes on; a second death would fail it."""
    settings = _settings(tmp_path, workflow_step_timeout=60.0, workflow_step_memory_mb=0)
    async with app_client(settings) as client:
        pool = client.app[RUNTIME].workflow_steps
        running = asyncio.create_task(_fire(client, "sorter", s=BIG))

        def busy() -> list[int]:
            return pool.busy_pids

        # The sort's step holds its process for seconds: long enough to be killed.
        (victim,) = await wait_until(busy, "the sort's step running", timeout=30, every=0.01)
        await asyncio.sleep(0.2)
        os.kill(victim, signal.SIGKILL)
        workflow = await running
        assert workflow["status"] == "succeeded", workflow["result"]
        assert workflow["result"]["output"] == {"computed": len(BIG)}
        assert not _alive(victim) and pool.restarts >= 1


async def test_blowups_the_expression_limits_know_fail_at_once(tmp_path):
    settings = _settings(tmp_path)
    async with app_client(settings) as client:
        pids = _step_pids(client)
        repeated = await _fire(client, "repeater", s="abc", n=100_000_000)
        assert repeated["status"] == "failed"
        assert "is refused" in _message(repeated)
        backtracked = await _fire(client, "backtracker", s="a" * 40 + "!")
        assert backtracked["status"] == "failed"
        assert "catastrophic backtracking" in _message(backtracked)
        # Refused inside the step process, which goes on serving steps.
        assert _step_pids(client) == pids
        quick = await _fire(client, "quick", s="ab")
        assert quick["status"] == "succeeded"


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
