"""Pack policies enforced by the actions worker: real app, real SQLite file, real shell runs.

action.retry re-runs a failed or timed-out execution as a new one (StackStorm's
`context.policies.retry`); action.concurrency and action.concurrency.attr keep at most
`threshold` executions scheduled or running, delaying (status `delayed`) or canceling the
rest; the API lists the policies in StackStorm's shape.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from engine.config import Settings, WorkerSettings
from engine.http.context import RUNTIME
from engine.model.records import NewExecution
from engine.process.reload import reload_runtime
from engine.workers import policies
from tests.support.app import FAST_POLL, app_client, settings_for
from tests.support.packs import write_pack
from tests.support.waiting import get_json, wait_execution, wait_until

FAILING_WORKFLOW = """\
version: 1.0
tasks:
  broken:
    action: core.local cmd="exit 4"
"""
PARALLEL_SLOW_TASKS = """\
version: 1.0
tasks:
  start:
    action: core.noop
    next:
      - do: left, right, middle
  left:
    action: pol.slow
  right:
    action: pol.slow
  middle:
    action: pol.slow
"""
ENDED = ("succeeded", "failed", "timeout", "abandoned", "canceled")
SHELL_ACTION = """\
name: {name}
runner_type: local-shell-cmd
parameters:
  cmd: {{default: "{cmd}"}}
  host: {{type: string}}
"""


def _policy(name: str, action: str, policy_type: str, parameters: str) -> str:
    return (
        f"name: {name}\ndescription: {name} test policy\nenabled: true\n"
        f"resource_ref: pol.{action}\npolicy_type: {policy_type}\nparameters: {parameters}\n"
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    actions = {
        "flaky": "exit 3",
        "sleepy": "sleep 5",
        "slow": "sleep 0.4",
        "only_one": "sleep 1",
        "by_host": "sleep 1",
    }
    files = {f"actions/{n}.yaml": SHELL_ACTION.format(name=n, cmd=c) for n, c in actions.items()}
    files.update(
        {
            "policies/flaky.yaml": _policy(
                "flaky.retry",
                "flaky",
                "action.retry",
                "{retry_on: failure, max_retry_count: 2, delay: 0.3}",
            ),
            "policies/sleepy.yaml": _policy(
                "sleepy.retry", "sleepy", "action.retry", "{retry_on: timeout, max_retry_count: 1}"
            ),
            "policies/slow.yaml": _policy(
                "slow.concurrency", "slow", "action.concurrency", "{threshold: 1}"
            ),
            "policies/only_one.yaml": _policy(
                "only_one.concurrency",
                "only_one",
                "action.concurrency",
                "{threshold: 1, action: cancel}",
            ),
            "policies/by_host.yaml": _policy(
                "by_host.concurrency",
                "by_host",
                "action.concurrency.attr",
                "{threshold: 1, attributes: [host]}",
            ),
        }
    )
    files["actions/wf.yaml"] = "name: wf\nrunner_type: orquesta\nentry_point: workflows/wf.yaml\n"
    files["actions/workflows/wf.yaml"] = FAILING_WORKFLOW
    files["actions/pair.yaml"] = (
        "name: pair\nrunner_type: orquesta\nentry_point: workflows/pair.yaml\n"
    )
    files["actions/workflows/pair.yaml"] = PARALLEL_SLOW_TASKS
    files["policies/wf.yaml"] = _policy(
        "wf.retry", "wf", "action.retry", "{retry_on: failure, max_retry_count: 1}"
    )
    write_pack(tmp_path / "packs", "pol", files)
    return settings_for(
        tmp_path,
        packs=[tmp_path / "packs"],
        roles=("api", "actions", "workflows"),
        workers=WorkerSettings(poll_interval=FAST_POLL, actions_concurrency=8),
    )


async def _run(client, action: str, **parameters) -> str:
    reply = await client.post(
        "/api/v1/executions", json={"action": action, "parameters": parameters}
    )
    assert reply.status == 201, await reply.text()
    return (await reply.json())["id"]


async def _all(client, action: str) -> list[dict]:
    return await get_json(client, "/api/v1/executions", action=action, limit=100)


def _statuses(execution: dict) -> list[str]:
    return [entry["status"] for entry in execution["log"]]


async def test_retry_on_failure_runs_new_executions_as_stackstorm_records_them(client):
    first = await _run(client, "pol.flaky")
    retries = await wait_until(
        lambda: _finished_retries(client, 3), "the original and two retries failed", timeout=20
    )
    by_count = {
        e["context"].get("policies", {}).get("retry", {}).get("retry_count", 0): e for e in retries
    }
    assert set(by_count) == {0, 1, 2}
    assert by_count[0]["id"] == first
    assert by_count[1]["context"]["policies"]["retry"] == {
        "applied_policy": "pol.flaky.retry",
        "retry_count": 1,
        "retried_liveaction_id": first,
    }
    assert by_count[2]["context"]["policies"]["retry"]["retried_liveaction_id"] == by_count[1]["id"]
    assert by_count[1]["context"]["user"] == by_count[0]["context"]["user"]
    # max_retry_count 2: no fourth run.
    await asyncio.sleep(1.0)
    assert len(await _all(client, "pol.flaky")) == 3
    store = client.app[RUNTIME].store
    original = await store.get_execution(by_count[0]["id"])
    retried = await store.get_execution(by_count[1]["id"])
    # `delay: 0.3`: the retry is not run before it.
    assert (retried.started_at - original.finished_at).total_seconds() >= 0.3


async def _finished_retries(client, count: int) -> list[dict] | None:
    runs = await _all(client, "pol.flaky")
    done = [e for e in runs if e["status"] == "failed"]
    return done if len(done) == count else None


async def test_retry_on_timeout(client):
    first = await _run(client, "pol.sleepy", timeout=1)
    assert (await wait_execution(client, first))["status"] == "timeout"
    retry = await wait_until(
        lambda: _retry_of(client, "pol.sleepy", first), "a retry of the timed-out run"
    )
    assert retry["parameters"]["timeout"] == 1
    assert (await wait_execution(client, retry["id"]))["status"] == "timeout"
    await asyncio.sleep(0.5)
    assert len(await _all(client, "pol.sleepy")) == 2  # max_retry_count 1


async def _retry_of(client, action: str, original: str) -> dict | None:
    for execution in await _all(client, action):
        retry = execution["context"].get("policies", {}).get("retry", {})
        if retry.get("retried_liveaction_id") == original:
            return execution
    return None


async def _run_intervals(client, ids: list[str]) -> list[tuple]:
    store = client.app[RUNTIME].store
    records = [await store.get_execution(i) for i in ids]
    return sorted((r.started_at, r.finished_at) for r in records)


async def test_concurrency_delays_the_rest_and_runs_them_one_at_a_time(client):
    ids = [await _run(client, "pol.slow") for _ in range(4)]
    done = [await wait_execution(client, i, timeout=20) for i in ids]
    assert [e["status"] for e in done] == ["succeeded"] * 4
    assert any("delayed" in _statuses(e) for e in done)
    intervals = await _run_intervals(client, ids)
    for (_, ended), (started, _) in itertools.pairwise(intervals):
        assert started >= ended, f"two runs of pol.slow overlapped: {intervals}"


async def test_concurrency_cancel_cancels_past_the_threshold(client):
    ids = [await _run(client, "pol.only_one") for _ in range(3)]
    done = [await wait_execution(client, i, statuses=ENDED, timeout=20) for i in ids]
    statuses = sorted(e["status"] for e in done)
    assert statuses.count("succeeded") >= 1 and "canceled" in statuses
    canceled = next(e for e in done if e["status"] == "canceled")
    assert "pol.only_one.concurrency" in canceled["result"]["message"]
    assert "running" not in _statuses(canceled)


async def test_concurrency_by_attribute_limits_each_value_on_its_own(client):
    a1 = await _run(client, "pol.by_host", host="a")
    a2 = await _run(client, "pol.by_host", host="a")
    b1 = await _run(client, "pol.by_host", host="b")
    done = {i: await wait_execution(client, i, timeout=20) for i in (a1, a2, b1)}
    assert all(e["status"] == "succeeded" for e in done.values())
    runs_a = await _run_intervals(client, [a1, a2])
    assert runs_a[1][0] >= runs_a[0][1], f"host a ran twice at once: {runs_a}"
    # host b has its own slot: it ran beside one of host a's runs.
    ((b_start, b_end),) = await _run_intervals(client, [b1])
    assert any(start < b_end and b_start < end for start, end in runs_a)


async def test_a_delayed_execution_can_be_canceled(client):
    ids = [await _run(client, "pol.slow") for _ in range(3)]
    delayed = await wait_until(
        lambda: _with_status(client, ids, "delayed"), "an execution delayed", timeout=10
    )
    reply = await client.delete(f"/api/v1/executions/{delayed}")
    assert reply.status == 200, await reply.text()
    assert (await reply.json())["status"] == "canceled"
    for i in ids:
        await wait_execution(client, i, statuses=ENDED, timeout=20)
    assert (await get_json(client, f"/api/v1/executions/{delayed}"))["status"] == "canceled"


async def _with_status(client, ids: list[str], status: str) -> str | None:
    for i in ids:
        if (await get_json(client, f"/api/v1/executions/{i}"))["status"] == status:
            return i
    return None


async def test_policies_and_policy_types_are_listed_in_stackstorms_shape(client):
    policies = await get_json(client, "/api/v1/policies")
    by_ref = {p["ref"]: p for p in policies}
    assert set(by_ref) == {
        "pol.flaky.retry",
        "pol.sleepy.retry",
        "pol.slow.concurrency",
        "pol.only_one.concurrency",
        "pol.by_host.concurrency",
        "pol.wf.retry",
    }
    retry = by_ref["pol.flaky.retry"]
    assert retry["uid"] == "policy:pol:flaky.retry"
    assert retry["parameters"] == {"retry_on": "failure", "max_retry_count": 2, "delay": 0.3}
    assert retry["metadata_file"] == "policies/flaky.yaml"
    filtered = await get_json(client, "/api/v1/policies", policy_type="action.concurrency")
    assert {p["ref"] for p in filtered} == {"pol.slow.concurrency", "pol.only_one.concurrency"}
    assert await get_json(client, "/api/v1/policies", resource_ref="pol.flaky") == [retry]
    assert await get_json(client, "/api/v1/policies/pol.flaky.retry") == retry
    assert await get_json(client, f"/api/v1/policies/{retry['id']}") == retry
    missing = await client.get("/api/v1/policies/pol.nope")
    assert missing.status == 404 and "pol.nope" in (await missing.json())["faultstring"]
    types = await get_json(client, "/api/v1/policytypes")
    assert [t["ref"] for t in types] == [
        "action.concurrency",
        "action.concurrency.attr",
        "action.retry",
    ]
    retry_type = await get_json(client, "/api/v1/policytypes/action.retry")
    assert retry_type["parameters"]["max_retry_count"]["maximum"] == 5
    # Hostile lookups: a long ref, an unknown filter value, a type's id.
    long_ref = await client.get("/api/v1/policies/" + "x" * 2000)
    assert long_ref.status == 404 and (await long_ref.json())["faultstring"]
    assert await get_json(client, "/api/v1/policies", pack="x" * 5000) == []
    assert await get_json(client, f"/api/v1/policytypes/{retry_type['id']}") == retry_type
    assert len(await get_json(client, "/api/v1/policytypes", resource_type="rule")) == 0
    unknown = await client.get("/api/v1/policytypes/action.nope")
    assert unknown.status == 404 and "action.retry" in (await unknown.json())["faultstring"]


async def test_a_failed_workflow_is_retried_by_the_sweep(client):
    """A workflow ends in the workflows worker, not the actions worker: its retry, marked
    pending when it started, is made by the sweep (engine.workers.policies)."""
    first = await _run(client, "pol.wf")
    assert (await wait_execution(client, first, timeout=20))["status"] == "failed"
    retry = await wait_until(
        lambda: _retry_of(client, "pol.wf", first), "a retry of the failed workflow", timeout=15
    )
    assert retry["context"]["policies"]["retry"]["applied_policy"] == "pol.wf.retry"
    assert (await wait_execution(client, retry["id"], timeout=20))["status"] == "failed"
    await asyncio.sleep(policies.SWEEP_SECONDS + 1)
    assert len(await _all(client, "pol.wf")) == 2  # max_retry_count 1
    # Its failing task is not retried on its own: tasks are the workflow's business.
    tasks = await get_json(client, "/api/v1/executions", action="core.local", limit=100)
    assert all("policies" not in t["context"] for t in tasks)


async def test_a_retry_left_pending_by_a_killed_worker_is_made_by_the_sweep(tmp_path):
    """The worker recorded the failure and died before the retry: no actions worker runs
    here, the test plays its part up to the crash, then the sweep alone settles it."""
    packs = tmp_path / "packs"
    write_pack(
        packs,
        "pol",
        {
            "actions/flaky.yaml": SHELL_ACTION.format(name="flaky", cmd="exit 3"),
            "policies/flaky.yaml": _policy(
                "flaky.retry", "flaky", "action.retry", "{retry_on: failure, max_retry_count: 2}"
            ),
        },
    )
    async with app_client(settings_for(tmp_path, packs=[packs], roles=("api",))) as client:
        runtime = client.app[RUNTIME]
        store = runtime.store
        original = await store.create_execution(
            NewExecution(action="pol.flaky", parameters={}, context={"user": "stanley"})
        )
        (claimed,) = await store.claim_executions(1, 30, 2)
        assert (await policies.admit(runtime, claimed)).run
        await store.start_execution(claimed.id, claimed.lease_token)
        await store.finish_execution(claimed.id, claimed.lease_token, "failed", {"exit": 3})
        # ... killed here. A process's sweep finds the pending retry:
        stop = asyncio.Event()
        sweeper = asyncio.create_task(policies.sweep(runtime, stop))
        try:
            retry = await wait_until(
                lambda: _retry_of(client, "pol.flaky", original.id), "the swept retry", timeout=15
            )
        finally:
            stop.set()
            await sweeper
        assert retry["status"] == "requested"
        assert retry["context"] == {
            "user": "stanley",
            "policies": {
                "retry": {
                    "applied_policy": "pol.flaky.retry",
                    "retry_count": 1,
                    "retried_liveaction_id": original.id,
                }
            },
        }
        assert len(await _all(client, "pol.flaky")) == 2


async def test_workflow_tasks_share_their_actions_slots(client):
    """Three parallel tasks of pol.slow (threshold 1): delayed in turn, the workflow waits
    for them and succeeds."""
    workflow = await _run(client, "pol.pair")
    assert (await wait_execution(client, workflow, timeout=30))["status"] == "succeeded"
    tasks = [e for e in await _all(client, "pol.slow") if e["parent"] == workflow]
    assert len(tasks) == 3 and all(t["status"] == "succeeded" for t in tasks)
    assert any("delayed" in _statuses(t) for t in tasks)
    intervals = await _run_intervals(client, [t["id"] for t in tasks])
    for (_, ended), (started, _) in itertools.pairwise(intervals):
        assert started >= ended, f"two tasks of pol.slow overlapped: {intervals}"


async def test_a_reload_applies_policy_changes_and_keeps_a_broken_one(client, tmp_path):
    runtime = client.app[RUNTIME]
    policy_file = tmp_path / "packs" / "pol" / "policies" / "slow.yaml"

    async def slow_policy() -> dict | None:
        listed = await get_json(client, "/api/v1/policies", resource_ref="pol.slow")
        return listed[0] if listed else None

    policy_file.write_text(policy_file.read_text().replace("threshold: 1", "threshold: 0"))
    report = reload_runtime(runtime)
    assert any("slow.yaml" in e and "parameters.threshold" in e for e in report.errors)
    assert str(policy_file) in report.kept_previous
    assert (await slow_policy())["parameters"]["threshold"] == 1  # the one that worked

    policy_file.write_text(policy_file.read_text().replace("threshold: 0", "threshold: 2"))
    reload_runtime(runtime)
    assert (await slow_policy())["parameters"]["threshold"] == 2
    policy_file.unlink()
    reload_runtime(runtime)
    assert await slow_policy() is None
    assert runtime.packs.action_policies("pol.slow") == []
