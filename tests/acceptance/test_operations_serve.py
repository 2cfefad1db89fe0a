"""Operating a real `hookyard serve`: timers, --watch reload, explain (API and CLI),
/metrics, and SIGTERM during a burst of webhooks."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import aiohttp

from tests.support.serve import serve_environment
from tests.support.stream import list_all, post_stream, wait_drained

WATCHED_RULE = """\
name: watched
pack: ops
trigger: {{type: core.st2.webhook, parameters: {{url: watched}}}}
criteria:
  trigger.body.v: {{type: equals, pattern: "{pattern}"}}
action: {{ref: core.noop}}
"""
TICK_RULE = """\
name: tick
pack: ops
trigger:
  type: core.st2.IntervalTimer
  parameters: {unit: seconds, delta: 1}
action: {ref: core.noop}
"""
# Generous bounds for a loaded CI machine: how long to keep polling, not a requirement.
PATIENCE = 30.0


async def get_json(session: aiohttp.ClientSession, url: str, **params: str):
    async with session.get(url, params=params) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def post_hook(session: aiohttp.ClientSession, base: str, hook: str, body: dict) -> str:
    async with session.post(f"{base}/webhooks/{hook}", json=body) as response:
        assert response.status == 202, await response.text()
        return (await response.json())["id"]


async def explain_when_processed(session, base: str, instance_id: str) -> dict:
    deadline = time.monotonic() + PATIENCE
    while True:
        report = await get_json(session, f"{base}/api/v1/triggerinstances/{instance_id}/explain")
        if report["trigger_instance"]["status"] in ("processed", "processing_failed"):
            return report
        assert time.monotonic() < deadline, report
        await asyncio.sleep(0.05)


def hookyard(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        env=serve_environment({"HOOKYARD_URL": url}),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_interval_timer_fires_an_action(serve):
    (serve.rules_dir / "tick.yaml").write_text(TICK_RULE)
    server = serve.start(roles="api,rules,actions,timers")
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + PATIENCE
        while True:
            executions = await get_json(
                session, f"{server.url}/api/v1/executions", rule="ops.tick", status="succeeded"
            )
            if executions:
                break
            assert time.monotonic() < deadline, server.log_tail()
            await asyncio.sleep(0.1)
    execution = executions[0]
    assert execution["action"]["ref"] == "core.noop"
    instance_id = execution["context"]["trigger_instance"]["id"]
    async with aiohttp.ClientSession() as session:
        instance = await get_json(session, f"{server.url}/api/v1/triggerinstances/{instance_id}")
    assert instance["trigger"].startswith("core.st2.IntervalTimer:")
    assert "executed_at" in instance["payload"]
    assert server.terminate() == 0


async def test_watch_applies_an_edit_and_keeps_the_old_rule_on_a_broken_edit(serve):
    rule_file = serve.rules_dir / "watched.yaml"
    rule_file.write_text(WATCHED_RULE.format(pattern="1"))
    server = serve.start(args=["--watch"])
    async with aiohttp.ClientSession() as session:
        first = await post_hook(session, server.url, "watched", {"v": "2"})
        assert (await explain_when_processed(session, server.url, first))["matched"] == []

        rule_file.write_text(WATCHED_RULE.format(pattern="2"))
        deadline = time.monotonic() + PATIENCE
        while True:
            instance_id = await post_hook(session, server.url, "watched", {"v": "2"})
            report = await explain_when_processed(session, server.url, instance_id)
            if report["matched"] == ["ops.watched"]:
                break
            assert time.monotonic() < deadline, server.log_tail()
            await asyncio.sleep(0.1)

        reloads = server.log_text().count("reloaded ")
        rule_file.write_text("name: watched\npack: ops\ntrigger: [broken\n")
        deadline = time.monotonic() + PATIENCE
        while server.log_text().count("reloaded ") == reloads:
            assert time.monotonic() < deadline, server.log_tail()
            await asyncio.sleep(0.1)
        log = server.log_text()
        assert "watched.yaml" in log.split("files changed")[-1], log
        assert "previous version stays in service" in log, log
        instance_id = await post_hook(session, server.url, "watched", {"v": "2"})
        report = await explain_when_processed(session, server.url, instance_id)
        assert report["matched"] == ["ops.watched"]
    assert server.terminate() == 0


async def test_explain_cli_names_the_failing_criterion(serve):
    server = serve.start(roles="api,rules")
    async with aiohttp.ClientSession() as session:
        instance_id = await post_hook(
            session, server.url, serve.webhook, {"kind": "unload", "n": 1, "pad": "b"}
        )
        await explain_when_processed(session, server.url, instance_id)
    result = hookyard("explain", instance_id, url=server.url)
    assert result.returncode == 0, result.stderr
    assert f"NOT MATCHED  {serve.rule_ref}" in result.stdout
    assert "failed criterion: trigger.body.kind equals load" in result.stdout
    assert 'value found: "unload"' in result.stdout or "value found: unload" in result.stdout
    as_json = hookyard("explain", instance_id, "--json", url=server.url)
    report = json.loads(as_json.stdout)
    assert report["candidates"][0]["failed_criterion"]["value"] == "unload"
    # `rule test` evaluates an edited rule against the stored payload, firing nothing.
    edited = serve.tmp_path / "edited.yaml"
    edited.write_text(
        (serve.rules_dir / "load.yaml").read_text().replace("pattern: load", "pattern: unload")
    )
    tested = hookyard(
        "rule",
        "test",
        str(edited),
        "--trigger-instance",
        instance_id,
        "--url",
        server.url,
        url=server.url,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "MATCHED" in tested.stdout
    async with aiohttp.ClientSession() as session:
        assert await list_all(session, f"{server.url}/api/v1/executions") == []
    assert server.terminate() == 0


def metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_counters_move_as_webhooks_arrive(serve):
    server = serve.start()
    counter = f'hookyard_webhooks_received_total{{status="202",webhook="{serve.webhook}"}}'
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/metrics") as response:
            before = metric(await response.text(), counter)
        for n in range(4):
            await post_hook(
                session, server.url, serve.webhook, {"kind": "load", "n": n, "pad": "b"}
            )
        async with session.get(f"{server.url}/metrics") as response:
            text = await response.text()
    assert before == 0
    assert metric(text, counter) == 4
    assert "hookyard_store_commit_seconds_bucket" in text
    assert server.terminate() == 0


async def test_sigterm_during_a_burst_loses_nothing(serve):
    server = serve.start(roles="api,rules,actions")
    async with aiohttp.ClientSession() as session:
        result = await post_stream(
            session,
            [server.url],
            webhook=serve.webhook,
            pad="a" * 14 + "b",
            max_requests=3000,
            stop_when=lambda r: len(r.accepted) >= 150,
            on_stop=lambda: server.proc.send_signal(15),
        )
    assert server.proc.wait(PATIENCE) == 0, server.log_tail()
    assert len(result.accepted) >= 150
    # Whatever was accepted but not yet processed is finished by the next start.
    again = serve.start(roles="api,rules,actions")
    async with aiohttp.ClientSession() as session:
        await wait_drained(session, again.url)
        instances = {
            i["id"]: i for i in await list_all(session, f"{again.url}/api/v1/triggerinstances")
        }
        enforcements = await list_all(session, f"{again.url}/api/v1/ruleenforcements")
    for n, instance_id in result.accepted.items():
        assert instances[instance_id]["status"] == "processed", (n, instances.get(instance_id))
    enforced = [e["trigger_instance_id"] for e in enforcements]
    assert len(enforced) == len(set(enforced)), "an instance was enforced twice"
    assert set(result.accepted.values()) <= set(enforced)
    assert again.terminate() == 0


async def test_sighup_reloads_rules(serve):
    rule_file = serve.rules_dir / "watched.yaml"
    rule_file.write_text(WATCHED_RULE.format(pattern="1"))
    server = serve.start()
    rule_file.write_text(WATCHED_RULE.format(pattern="2"))
    server.proc.send_signal(1)  # SIGHUP
    deadline = time.monotonic() + PATIENCE
    while "reloaded " not in server.log_text():
        assert time.monotonic() < deadline, server.log_tail()
        await asyncio.sleep(0.05)
    async with aiohttp.ClientSession() as session:
        instance_id = await post_hook(session, server.url, "watched", {"v": "2"})
        report = await explain_when_processed(session, server.url, instance_id)
    assert report["matched"] == ["ops.watched"]
    assert server.terminate() == 0
