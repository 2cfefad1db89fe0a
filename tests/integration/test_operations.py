"""Explain, reload, metrics and timers through a real app on a real SQLite file (and two
apps on one PostgreSQL database for timers)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from engine.config import (
    ExplainSettings,
    Settings,
    StoreSettings,
    TimerSettings,
)
from engine.http.app import create_app
from engine.http.context import RUNTIME
from tests.support.app import app_client, settings_for
from tests.support.postgres import truncate_all
from tests.support.waiting import wait_processed

DEPLOY_RULE = """\
name: deploy_main
pack: t
trigger: {type: core.st2.webhook, parameters: {url: deploy}}
criteria:
  trigger.body.branch: {type: equals, pattern: main}
  trigger.body.env: {type: equals, pattern: prod}
action: {ref: core.noop}
"""
ANY_DEPLOY_RULE = """\
name: deploy_any
pack: t
trigger: {type: core.st2.webhook, parameters: {url: deploy}}
action: {ref: core.noop}
"""
TICK_RULE = """\
name: tick
pack: t
trigger:
  type: core.st2.IntervalTimer
  parameters: {unit: seconds, delta: 1}
action: {ref: core.noop}
"""


def ops_settings(tmp_path: Path, rules: Path, **changes) -> Settings:
    fields = {
        "roles": ("api", "rules", "actions", "timers"),
        "timers": TimerSettings(check_interval=0.2),
        "rules_dirs": (str(rules),),
        **changes,
    }
    return settings_for(tmp_path, **fields)


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "deploy_main.yaml").write_text(DEPLOY_RULE)
    (folder / "deploy_any.yaml").write_text(ANY_DEPLOY_RULE)
    return folder


@pytest.fixture
def settings(tmp_path: Path, rules: Path) -> Settings:
    return ops_settings(tmp_path, rules)


async def explained(client, instance_id: str, **query) -> dict:
    await wait_processed(client, instance_id)
    for _ in range(500):
        report = await (
            await client.get(f"/api/v1/triggerinstances/{instance_id}/explain", params=query)
        ).json()
        executions = [c.get("execution", {}).get("status") for c in report["candidates"]]
        if all(s in (None, "succeeded", "failed") for s in executions):
            return report
        await asyncio.sleep(0.02)
    raise AssertionError(f"executions of {instance_id} never finished: {report}")


# --- explain -----------------------------------------------------------------------------


async def test_explain_names_the_failing_criterion_and_the_execution_of_the_match(client):
    posted = await client.post("/webhooks/deploy", json={"branch": "dev", "env": "prod"})
    report = await explained(client, (await posted.json())["id"])
    by_rule = {c["rule"]: c for c in report["candidates"]}
    assert set(by_rule) == {"t.deploy_main", "t.deploy_any"}
    assert report["matched"] == ["t.deploy_any"]
    failed = by_rule["t.deploy_main"]["failed_criterion"]
    assert failed["key"] == "trigger.body.branch"
    assert failed["operator"] == "equals"
    assert failed["pattern"] == "main"
    assert failed["value"] == "dev"
    assert failed["reason"]
    assert "execution" not in by_rule["t.deploy_main"]
    assert by_rule["t.deploy_any"]["enforcement"]["status"] == "succeeded"
    assert by_rule["t.deploy_any"]["execution"]["action"] == "core.noop"
    assert by_rule["t.deploy_any"]["execution"]["status"] == "succeeded"
    only = await explained(client, report["trigger_instance"]["id"], rule="t.deploy_main")
    assert [c["rule"] for c in only["candidates"]] == ["t.deploy_main"]


async def test_a_catastrophic_regex_is_stopped_and_explained_and_the_engine_goes_on(
    tmp_path, rules
):
    # A pattern that backtracks exponentially on a long run of "a" (ReDoS): before regex
    # time limits, this webhook held the event loop — every other request with it.
    (rules / "evil.yaml").write_text(
        "name: evil\npack: t\n"
        "trigger: {type: core.st2.webhook, parameters: {url: deploy}}\n"
        "criteria:\n  trigger.body.branch: {type: regex, pattern: '^(a|aa)+$'}\n"
        "action: {ref: core.noop}\n"
    )
    async with app_client(ops_settings(tmp_path, rules)) as client:
        evil = await client.post("/webhooks/deploy", json={"branch": "a" * 40 + "!"})
        report = await explained(client, (await evil.json())["id"])
        by_rule = {c["rule"]: c for c in report["candidates"]}
        assert report["matched"] == ["t.deploy_any"]
        failed = by_rule["t.evil"]["failed_criterion"]
        assert failed["operator"] == "regex"
        assert "ran longer than" in failed["reason"]
        assert "catastrophic backtracking" in failed["reason"]
        # The engine kept going: the next webhook is taken and evaluated as usual.
        later = await client.post("/webhooks/deploy", json={"branch": "main", "env": "prod"})
        assert later.status == 202
        again = await explained(client, (await later.json())["id"])
        assert sorted(again["matched"]) == ["t.deploy_any", "t.deploy_main"]


async def test_explain_hints_when_no_rule_listens(tmp_path, rules):
    # A hook defined in the config (so it accepts posts) that no rule listens to.
    settings = ops_settings(tmp_path, rules, webhooks={"deploi": {"auth": "none"}})
    async with app_client(settings) as client:
        posted = await client.post("/webhooks/deploi", json={})
        report = await explained(client, (await posted.json())["id"])
    assert report["candidates"] == []
    assert "no enabled rule listens to webhook 'deploi'" in report["hint"]
    assert "deploy" in report["hint"].split("similar names:")[1]


async def test_explain_of_an_unknown_instance_is_404(client):
    response = await client.get("/api/v1/triggerinstances/0123456789abcdef01234567/explain")
    assert response.status == 404


async def test_unmatched_traces_are_not_kept_at_sample_rate_zero(tmp_path, rules):
    (rules / "deploy_any.yaml").unlink()
    settings = ops_settings(tmp_path, rules, explain=ExplainSettings(sample_rate=0.0))
    async with app_client(settings) as client:
        posted = await client.post("/webhooks/deploy", json={"branch": "dev"})
        report = await explained(client, (await posted.json())["id"])
        assert report["traces_kept"] is False
        assert report["candidates"] == []
        assert "not kept" in report["hint"]
        # A match is kept whatever the rate.
        posted = await client.post("/webhooks/deploy", json={"branch": "main", "env": "prod"})
        report = await explained(client, (await posted.json())["id"])
        assert report["traces_kept"] is True
        assert report["matched"] == ["t.deploy_main"]


# --- metrics -----------------------------------------------------------------------------


def sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        metric, _, value = line.rpartition(" ")
        base, _, label_text = metric.partition("{")
        found = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if base == name and found == wanted:
            return float(value)
    return 0.0


async def test_metrics_move_as_webhooks_arrive(client):
    before = await (await client.get("/metrics")).text()
    assert sample(before, "hookyard_webhooks_received_total", webhook="deploy", status="202") == 0
    ids = []
    for _ in range(3):
        posted = await client.post("/webhooks/deploy", json={"branch": "main", "env": "prod"})
        ids.append((await posted.json())["id"])
    await client.post(
        "/webhooks/deploy", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    for instance_id in ids:
        await explained(client, instance_id)
    response = await client.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert sample(text, "hookyard_webhooks_received_total", webhook="deploy", status="202") == 3
    assert sample(text, "hookyard_webhooks_received_total", webhook="deploy", status="400") == 1
    assert sample(text, "hookyard_rule_matches_total", rule="t.deploy_main") == 3
    assert sample(text, "hookyard_trigger_instances_processed_total", status="processed") >= 3
    assert (
        sample(text, "hookyard_executions_finished_total", action="core.noop", status="succeeded")
        == 6
    )
    assert sample(text, "hookyard_store_commit_batch_size_count") >= 1
    assert sample(text, "hookyard_store_commit_batch_size_sum") >= 3
    assert 'hookyard_queue_depth{queue="trigger_instances"}' in text
    assert 'hookyard_queue_oldest_age_seconds{queue="executions"}' in text


async def test_metrics_never_label_an_undefined_path(client):
    response = await client.post("/webhooks/deploy/some-secret-looking-thing", json={})
    await client.post("/webhooks/random-scan", json={})
    text = await (await client.get("/metrics")).text()
    assert "some-secret" not in text and "random-scan" not in text
    status = str(response.status)
    assert sample(text, "hookyard_webhooks_received_total", webhook="deploy", status=status) == 1
    assert sample(text, "hookyard_webhooks_received_total", webhook="<unknown>", status="404") == 1


async def test_two_apps_have_separate_registries(tmp_path, rules, client):
    other = tmp_path / "other"
    other.mkdir()
    settings = ops_settings(other, rules, roles=("api",))
    async with app_client(settings) as second:
        await client.post("/webhooks/deploy", json={})
        text = await (await second.get("/metrics")).text()
        assert sample(text, "hookyard_webhooks_received_total", webhook="deploy", status="202") == 0


# --- reload ------------------------------------------------------------------------------


async def test_reload_applies_edits_and_keeps_the_previous_version_of_a_broken_file(client, rules):
    (rules / "deploy_main.yaml").write_text(DEPLOY_RULE.replace("pattern: main", "pattern: dev"))
    (rules / "deploy_any.yaml").write_text("name: deploy_any\npack: t\ntrigger: [oops\n")
    response = await client.post("/api/v1/reload")
    assert response.status == 200
    report = await response.json()
    assert any("deploy_any.yaml" in error for error in report["errors"])
    assert report["kept_previous"] == [str((rules / "deploy_any.yaml").resolve())]
    posted = await client.post("/webhooks/deploy", json={"branch": "dev", "env": "prod"})
    result = await explained(client, (await posted.json())["id"])
    # The edit took effect and the broken file's previous rule still fires.
    assert sorted(result["matched"]) == ["t.deploy_any", "t.deploy_main"]
    (rules / "deploy_any.yaml").unlink()
    report = await (await client.post("/api/v1/reload")).json()
    assert report["errors"] == [] and report["rules"] == 1


# --- timers ------------------------------------------------------------------------------


async def ticks(client, limit: int = 100) -> list[dict]:
    data = await (await client.get("/api/v1/triggerinstances", params={"limit": limit})).json()
    return [d for d in data if d["trigger"].startswith("core.st2.IntervalTimer")]


async def test_interval_timer_fires_its_rule_through_the_store(tmp_path, rules):
    (rules / "tick.yaml").write_text(TICK_RULE)
    async with app_client(ops_settings(tmp_path, rules)) as client:
        for _ in range(400):
            fired = await ticks(client)
            if len(fired) >= 2:
                break
            await asyncio.sleep(0.02)
        assert len(fired) >= 2
        instance = fired[-1]
        assert set(instance["payload"]) == {"executed_at", "schedule"}
        assert instance["payload"]["schedule"] == {"unit": "seconds", "delta": 1}
        assert instance["dedupe_key"].startswith("timer:core.st2.IntervalTimer:")
        report = await explained(client, instance["id"])
        # Only the timer rule is a candidate: webhook rules never see ticks.
        assert report["matched"] == ["t.tick"]
        assert report["candidates"][0]["execution"]["status"] == "succeeded"


@pytest.mark.postgres
async def test_two_processes_on_postgresql_fire_each_tick_once(tmp_path, rules, pg_url):
    (rules / "tick.yaml").write_text(TICK_RULE)
    apps = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        apps.append(
            create_app(
                ops_settings(
                    folder,
                    rules,
                    store=StoreSettings(url=pg_url),
                    timers=TimerSettings(check_interval=0.05),
                    roles=("api", "timers"),
                )
            )
        )
    async with TestClient(TestServer(apps[0])) as first, TestClient(TestServer(apps[1])):
        await truncate_all(pg_url)
        for _ in range(600):
            fired = await ticks(first)
            if len(fired) >= 3:
                break
            await asyncio.sleep(0.02)
        store = apps[0][RUNTIME].store
        page = await store.list_trigger_instances({}, 100, 0)
        times = [i.occurrence_time for i in page.items if i.trigger.startswith("core.st2.")]
        assert len(times) >= 3
        assert len(times) == len(set(times)), "a tick was stored twice"


def test_reload_keeps_the_previous_action_and_pack_of_broken_files(tmp_path, rules):
    from engine.process.reload import reload_runtime
    from engine.process.runtime import Runtime
    from engine.store import create_store

    pack = tmp_path / "packs" / "ops"
    (pack / "actions").mkdir(parents=True)
    pack_yaml = "name: ops\ndescription: d\nversion: 1.0.0\nauthor: a\n"
    (pack / "pack.yaml").write_text(pack_yaml)
    action = "name: hello\nrunner_type: local-shell-cmd\nparameters: {cmd: {default: 'true'}}\n"
    (pack / "actions" / "hello.yaml").write_text(action)
    settings = ops_settings(tmp_path, rules, packs_dirs=(str(tmp_path / "packs"),))
    runtime = Runtime(settings, create_store(settings.store, tmp_path))
    assert reload_runtime(runtime).errors == []
    assert runtime.action_known("ops.hello")

    (pack / "actions" / "hello.yaml").write_text("name: hello\nrunner_type: no-such-runner\n")
    report = reload_runtime(runtime)
    assert any("hello.yaml" in error for error in report.errors)
    assert runtime.action_known("ops.hello"), "the previous action stays in service"

    (pack / "pack.yaml").write_text("name: ops\n")  # missing required fields
    report = reload_runtime(runtime)
    assert any("pack.yaml" in error for error in report.errors)
    assert "ops" in runtime.packs.packs and runtime.action_known("ops.hello")
    assert str(pack) in report.kept_previous
